"""Helpers for training and sharing any head: LoRA target names (`lora`), loss-curve plots (`plotting`), model cards
and Hub upload (`hub`). They import nothing else of hf_gru."""
