"""Task tools around the model's heads: tokenizers and chunking for text (`text`, `perplexity`), speech processing and
streaming recognition (`speech`), forecasting data and metrics (`forecasting`), anomaly detection (`anomaly`). They
import the model (`hf_gru.models`) and the training helpers (`hf_gru.training`); a checkpoint never needs them."""
