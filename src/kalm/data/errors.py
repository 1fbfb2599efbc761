"""The error every reader of a stage input raises for a missing or malformed file."""


class InputFileError(ValueError):
    """An input file that is missing or malformed; the message names the file and the stage that makes it."""
