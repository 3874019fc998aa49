"""Starting from a pretrained transformer: conversion of Llama-family checkpoints into HybridGRU (`conversion`),
layer-wise and logit distillation with a Trainer subclass (`distillation`), encoder distillation (`encoder_distillation`).
They import the model (`hf_gru.models`) and the training helpers (`hf_gru.training`)."""
