"""Speech helpers for HybridGRUForCTC: the processor, transcript normalisation, WAV reading and streaming recognition.

The processor is made of existing transformers classes, so a checkpoint needs no custom processing code:
`Speech2TextFeatureExtractor` (Kaldi-style log-mel filter banks, 25 ms windows every 10 ms, no utterance
normalisation, so every frame depends on its own window only) and `Wav2Vec2CTCTokenizer` over upper-case letters,
apostrophe and `|` between words, bundled in a `Wav2Vec2Processor`. Nothing here is needed to load a checkpoint.
"""

import json
import re
import wave
from pathlib import Path

import numpy as np
import torch
from transformers import Speech2TextFeatureExtractor, Wav2Vec2CTCTokenizer, Wav2Vec2Processor

# Index 0 is the CTC blank (= pad), as in transformers' wav2vec2 checkpoints.
CTC_VOCAB = ("<pad>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
SAMPLING_RATE = 16000
# Kaldi's defaults, which Speech2TextFeatureExtractor uses: 25 ms windows every 10 ms, no padding at the edges.
WINDOW_SAMPLES, HOP_SAMPLES = 400, 160
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def build_processor(save_directory: str | Path, num_mel_bins: int = 80) -> Wav2Vec2Processor:
    """Writes `vocab.json` into `save_directory` and returns the processor (call `save_pretrained` to keep it).

    The tokenizer upper-cases its input (`do_lower_case=True` in wav2vec2's convention) and decodes to lower case.
    """
    if num_mel_bins <= 0:
        raise ValueError(f"`num_mel_bins` must be a positive integer, got {num_mel_bins}.")
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    vocab_file = save_directory / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(CTC_VOCAB)}, indent=2))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file),
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token=None,
        eos_token=None,
        word_delimiter_token="|",
        do_lower_case=True,
    )
    feature_extractor = Speech2TextFeatureExtractor(
        feature_size=num_mel_bins,
        num_mel_bins=num_mel_bins,
        sampling_rate=SAMPLING_RATE,
        do_ceptral_normalize=False,  # utterance statistics would make a frame depend on the future
    )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def normalize_transcript(text: str) -> str:
    """Lower case, common titles spelled out, every character outside a-z and apostrophe dropped, spaces collapsed.

    The form transcripts take for training and scoring: "Mrs. Dashwood's  house!" -> "missus dashwood's house".
    """
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"\b(mrs|mr|dr|st)\.", lambda m: _ABBREVIATIONS[m.group(1)], text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes inside words
    return " ".join(text.split())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Reads a PCM WAV file (8/16/32-bit, any channels) as mono float32 in [-1, 1] and its sampling rate.

    Standard library only, so the ASR pipeline can take the array where it would need ffmpeg to read a file path.
    """
    with wave.open(str(path), "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported; expected 8, 16 or 32-bit PCM.")
    audio = np.frombuffer(raw, dtype=dtypes[width]).astype(np.float32)
    audio = (audio - 128.0) / 128.0 if width == 1 else audio / float(2 ** (8 * width - 1))
    return audio.reshape(-1, channels).mean(axis=1), rate


class StreamingRecognizer:
    """Real-time greedy CTC recognition with a causal HybridGRUForCTC: `accept_audio(chunk)` as audio arrives.

    Log-mel frames are computed as soon as their 25 ms window is complete, and fed to the model with its cache and
    subsampler state, so the logits equal one offline pass over the whole recording (chunks of any size).

    >>> recognizer = StreamingRecognizer(model, processor)
    >>> for chunk in microphone_chunks:  # float32 mono at 16 kHz
    ...     print(recognizer.accept_audio(chunk))  # the transcript so far
    """

    def __init__(self, model: torch.nn.Module, processor: Wav2Vec2Processor):
        feature_extractor = processor.feature_extractor
        if model.config.bidirectional:
            raise ValueError("StreamingRecognizer needs a causal model, but the config has bidirectional=True.")
        if not isinstance(feature_extractor, Speech2TextFeatureExtractor):
            raise ValueError(
                f"StreamingRecognizer computes frames incrementally for Speech2TextFeatureExtractor, got "
                f"{type(feature_extractor).__name__}."
            )
        if feature_extractor.do_ceptral_normalize or feature_extractor.dither:
            raise ValueError(
                "Streaming needs frame-local features: the feature extractor has do_ceptral_normalize="
                f"{feature_extractor.do_ceptral_normalize}, dither={feature_extractor.dither}; set both off."
            )
        self.model = model.eval()
        self.processor = processor
        self.reset()

    def reset(self) -> None:
        """Forgets the audio heard so far: the next chunk starts a new utterance."""
        self._samples = np.zeros(0, dtype=np.float32)
        self._cache = None
        self._subsampler_state = None
        self.token_ids: list[int] = []  # arg-max token of every output frame so far

    @torch.no_grad()
    def accept_audio(self, audio: np.ndarray) -> str:
        """Adds float32 mono samples at 16 kHz; returns the transcript of everything heard so far."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"`audio` must be 1-D mono samples, got shape {audio.shape}.")
        self._samples = np.concatenate([self._samples, audio])
        num_frames = (len(self._samples) - WINDOW_SAMPLES) // HOP_SAMPLES + 1
        if num_frames > 0:
            used = self._samples[: (num_frames - 1) * HOP_SAMPLES + WINDOW_SAMPLES]
            features = self.processor.feature_extractor(used, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            self._samples = self._samples[num_frames * HOP_SAMPLES :]
            self.accept_features(features["input_features"])
        return self.transcript

    @torch.no_grad()
    def accept_features(self, input_features: torch.Tensor) -> torch.Tensor:
        """Feeds (1, frames, num_mel_bins) log-mel frames; returns the new logits (1, new_frames, vocab)."""
        device = next(self.model.parameters()).device
        outputs = self.model(
            input_features=input_features.to(device),
            cache=self._cache,
            subsampler_state=self._subsampler_state,
            use_cache=True,
        )
        self._cache, self._subsampler_state = outputs.cache, outputs.subsampler_state
        self.token_ids.extend(outputs.logits.argmax(-1)[0].tolist())
        return outputs.logits

    @property
    def transcript(self) -> str:
        """Greedy CTC decoding of the frames so far (repeats merged, blanks dropped), as the ASR pipeline does."""
        return self.processor.tokenizer.decode(self.token_ids)


__all__ = ["CTC_VOCAB", "StreamingRecognizer", "build_processor", "normalize_transcript", "read_wav"]
