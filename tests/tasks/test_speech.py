"""Speech processing around HybridGRUForCTC: processor round trips, WAV reading, streaming recognition, ASR pipeline."""

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoProcessor,
    AutoTokenizer,
    Speech2TextFeatureExtractor,
    Wav2Vec2CTCTokenizer,
    pipeline,
)

from hf_gru import HybridGRUForCTC
from hf_gru.tasks.speech import CTC_VOCAB, StreamingRecognizer, build_processor, normalize_transcript, read_wav
from tests.helpers import assert_close, run_without_hf_gru, tiny_config

NUM_MEL_BINS = 16
POCKETSPHINX_WAV = Path("/usr/share/pocketsphinx/test/data/cards/001.wav")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def processor(tmp_path):
    return build_processor(tmp_path / "processor", num_mel_bins=NUM_MEL_BINS)


def ctc_model(processor, **overrides) -> HybridGRUForCTC:
    values = dict(
        vocab_size=len(processor.tokenizer),
        pad_token_id=processor.tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
        num_mel_bins=NUM_MEL_BINS,
        conv_subsampling_channels=24,
    )
    values.update(overrides)
    return HybridGRUForCTC(tiny_config(**values)).eval()


def noise_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Band-limited noise with a changing envelope: varied frames, so untrained models emit varied tokens."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    envelope = 0.05 + 0.3 * np.abs(np.sin(np.linspace(0, 9, n)))
    return (rng.standard_normal(n) * envelope).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
    samples = np.clip(np.repeat(audio[:, None], channels, axis=1) * 32767, -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


def greedy_text(model, processor, audio: np.ndarray) -> str:
    features = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_features=features["input_features"], attention_mask=features["attention_mask"]).logits
    return processor.tokenizer.decode(logits.argmax(-1)[0])


# --- text and tokenizer ------------------------------------------------------------------------------------------


def test_normalize_transcript_keeps_letters_apostrophes_and_single_spaces():
    text = "Mrs. Dashwood's  house!\n\"'Tis so,\" said Mr. Willoughby--in 1811; wedding-day."
    assert normalize_transcript(text) == "missus dashwood's house tis so said mister willoughby in wedding day"


def test_tokenizer_round_trip_and_ctc_decoding(processor):
    tokenizer = processor.tokenizer
    assert isinstance(tokenizer, Wav2Vec2CTCTokenizer)
    assert len(tokenizer) == len(CTC_VOCAB) and tokenizer.pad_token_id == 0
    text = "he was not an ill disposed young man"
    ids = tokenizer(text).input_ids
    assert tokenizer(text.upper()).input_ids == ids  # any case in
    assert tokenizer.unk_token_id not in ids and tokenizer.pad_token_id not in ids
    assert tokenizer.decode(ids, group_tokens=False) == text
    # CTC: repeats merge, blanks (pad) separate real repeats and vanish, "|" becomes a space
    a, b, sep, pad = *tokenizer.convert_tokens_to_ids(["A", "B", "|"]), tokenizer.pad_token_id
    assert tokenizer.decode([pad, a, a, pad, a, sep, sep, b, b, pad]) == "aa b"


def test_processor_saves_and_loads_with_auto_classes(processor, tmp_path):
    folder = tmp_path / "saved"
    processor.save_pretrained(folder)
    audio = noise_audio(1.3)
    loaded = AutoProcessor.from_pretrained(folder)
    assert type(loaded) is type(processor)
    assert isinstance(AutoFeatureExtractor.from_pretrained(folder), Speech2TextFeatureExtractor)
    assert isinstance(AutoTokenizer.from_pretrained(folder), Wav2Vec2CTCTokenizer)
    expected = processor(audio, sampling_rate=16000, return_tensors="pt")["input_features"]
    got = loaded(audio, sampling_rate=16000, return_tensors="pt")["input_features"]
    assert got.shape == (1, 1 + (len(audio) - 400) // 160, NUM_MEL_BINS)
    assert torch.equal(got, expected)
    text = "it is a truth universally acknowledged"
    assert loaded(text=text).input_ids == processor(text=text).input_ids


def test_feature_frames_depend_only_on_their_own_window(processor):
    """What streaming relies on: the frames of a prefix of the audio are the first frames of the whole."""
    audio = noise_audio(1.0)
    whole = processor(audio, sampling_rate=16000)["input_features"][0]
    prefix = processor(audio[:5000], sampling_rate=16000)["input_features"][0]
    np.testing.assert_array_equal(prefix, whole[: len(prefix)])


def test_read_wav_returns_mono_float_and_rate(tmp_path):
    audio = np.linspace(-0.5, 0.5, 800).astype(np.float32)
    write_wav(tmp_path / "stereo.wav", audio, rate=8000, channels=2)
    read, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 8000 and read.dtype == np.float32 and read.shape == audio.shape
    np.testing.assert_allclose(read, audio, atol=2 / 32768)  # int16 truncation and the 32767 vs 32768 scale


# --- streaming ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_chunk", [37, 400, 4000])
def test_streaming_recognizer_equals_one_offline_pass(processor, max_chunk):
    model = ctc_model(processor)
    audio = noise_audio(2.1, seed=max_chunk)
    features = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        offline = model(**features).logits
    recognizer = StreamingRecognizer(model, processor)
    rng, start = np.random.default_rng(max_chunk), 0
    while start < len(audio):  # random chunk sizes: windows and strides straddle chunk boundaries
        size = int(rng.integers(1, max_chunk + 1))
        recognizer.accept_audio(audio[start : start + size])
        start += size
    assert len(recognizer.token_ids) == offline.shape[1]
    assert recognizer.token_ids == offline.argmax(-1)[0].tolist()
    assert recognizer.transcript == processor.tokenizer.decode(offline.argmax(-1)[0])
    recognizer.reset()
    assert recognizer.accept_audio(np.zeros(100, dtype=np.float32)) == "" and recognizer.token_ids == []


def test_streaming_recognizer_logits_equal_offline_logits(processor):
    model = ctc_model(processor, gru_variant="mingru")
    audio = noise_audio(1.5, seed=3)
    features = processor(audio, sampling_rate=16000, return_tensors="pt")["input_features"]
    recognizer = StreamingRecognizer(model, processor)
    pieces = [recognizer.accept_features(features[:, i : i + 7]) for i in range(0, features.shape[1], 7)]
    with torch.no_grad():
        assert_close(torch.cat(pieces, 1), model(features).logits, 1e-5)


def test_streaming_recognizer_refuses_bidirectional_models_and_utterance_normalisation(processor):
    with pytest.raises(ValueError, match="bidirectional=True"):
        StreamingRecognizer(ctc_model(processor, bidirectional=True), processor)
    processor.feature_extractor.do_ceptral_normalize = True
    with pytest.raises(ValueError, match="do_ceptral_normalize=True"):
        StreamingRecognizer(ctc_model(processor), processor)


# --- ASR pipeline ------------------------------------------------------------------------------------------------


def save_checkpoint(model, processor, folder: Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_pipeline_transcribes_a_wav_file(processor, tmp_path):
    model = ctc_model(processor, bidirectional=True)
    folder = save_checkpoint(model, processor, tmp_path / "checkpoint")
    audio = noise_audio(1.7, seed=5)
    write_wav(tmp_path / "speech.wav", audio)
    asr = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)
    assert isinstance(asr.model, HybridGRUForCTC) and asr.type == "ctc"
    read, rate = read_wav(tmp_path / "speech.wav")
    text = asr({"raw": read, "sampling_rate": rate})["text"]
    assert text == greedy_text(model, processor, read)
    assert asr(read)["text"] == text
    if shutil.which("ffmpeg"):  # a file path is decoded by ffmpeg
        assert asr(str(tmp_path / "speech.wav"))["text"] == text


def test_pipeline_runs_in_a_process_without_hf_gru(processor, tmp_path):
    """The checkpoint carries everything: model code as remote code, processing as stock transformers classes."""
    model = ctc_model(processor)
    folder = save_checkpoint(model, processor, tmp_path / "checkpoint")
    audio = noise_audio(1.2, seed=7)
    np.save(tmp_path / "audio.npy", audio)
    code = f"""
import json, numpy as np
from transformers import pipeline
asr = pipeline("automatic-speech-recognition", model={str(folder)!r}, trust_remote_code=True)
text = asr({{"raw": np.load({str(tmp_path / "audio.npy")!r}), "sampling_rate": 16000}})["text"]
print(json.dumps({{"text": text, "model": type(asr.model).__module__, "fe": type(asr.feature_extractor).__name__}}))
"""
    result = run_without_hf_gru(code, cwd=tmp_path)
    assert not result["model"].startswith("hf_gru") and result["fe"] == "Speech2TextFeatureExtractor"
    assert result["text"] == greedy_text(model, processor, audio)


@pytest.mark.skipif(not POCKETSPHINX_WAV.is_file(), reason="needs Debian's pocketsphinx-testdata (real recordings)")
def test_real_recording_through_pipeline_and_streaming_agree(processor, tmp_path):
    model = ctc_model(processor)
    folder = save_checkpoint(model, processor, tmp_path / "checkpoint")
    audio, rate = read_wav(POCKETSPHINX_WAV)
    assert rate == 16000
    text = pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)(audio)["text"]
    recognizer = StreamingRecognizer(model, processor)
    for start in range(0, len(audio), 1600):  # 100 ms chunks, as from a microphone
        recognizer.accept_audio(audio[start : start + 1600])
    assert recognizer.transcript == text
    json.dumps(text)  # a plain string
