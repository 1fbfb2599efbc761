"""The training-level instruction language (18 patterns x 3 relation phrasings)."""

from kalm.tasks import RelationGoal, training_goals, training_instructions


def test_54_distinct_phrasings_per_goal_and_4320_in_all() -> None:
    per_goal = [training_instructions(g) for g in training_goals()]
    assert all(len(p) == len(set(p)) == 54 for p in per_goal)
    assert len({text for p in per_goal for text in p}) == 4320


def test_phrasings_follow_the_sample_data() -> None:
    texts = training_instructions(RelationGoal("purple", "red", "behind"))
    assert "Push the purple ball behind the red ball" in texts
    assert "Can you help me keep the purple ball to the behind of the red ball" in texts
    assert "Is there any purple ball in behind of the red ball" in texts
    assert "The purple ball was moved behind the red ball" in texts
    left = training_instructions(RelationGoal("red", "blue", "left"))
    assert "Can you push the red ball to the left of the blue ball" in left
    assert all("purple" not in t for t in left)


def test_every_training_phrasing_parses_back_to_its_goal() -> None:
    from kalm.tasks.language import parse_instruction

    for goal in training_goals():
        for text in training_instructions(goal):
            assert parse_instruction(text) == goal, text
    assert parse_instruction("Push the red ball") is None
    assert parse_instruction("Push the red ball near the blue ball") is None
    assert parse_instruction("push the red ball to the left of the red ball") is None
