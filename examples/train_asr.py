"""Train a HybridGRU speech recogniser (CTC) on speech synthesised with espeak-ng; compare with a transformers baseline.

    python examples/train_asr.py --output-dir runs/asr          # ~15 minutes on 2 CPU cores (see --help)
    python examples/train_asr.py --output-dir runs/asr --quick  # a 2-minute smoke run (tests use it)

Needs Debian's espeak-ng (synthesis) and, for the real-speech check, pocketsphinx-testdata:
`apt-get install -y espeak-ng pocketsphinx-testdata`.

1. Clauses of Jane Austen's novels (Sense and Sensibility left out: the real recordings read from it) are split into
   train and test sets of different sentences, and spoken by espeak-ng with several voices, speeds and pitches; the
   training audio gets a little noise.
2. Every model reads the same 80-bin log-mel frames (transformers' Speech2TextFeatureExtractor) and trains with
   `Trainer` for the same number of steps, batch size and learning-rate schedule:
   - hybrid_gru: HybridGRUForCTC, bidirectional (offline) unless --causal (streaming);
   - parakeet: transformers' ParakeetForCTC (a FastConformer CTC encoder), randomly initialised at a similar size,
     with its usual per-utterance feature normalisation (Speech2Text's cepstral mean/variance normalisation).
3. WER and CER on the held-out sentences (hf_gru's offline `evaluate` metric modules), side by side.
4. The HybridGRU checkpoint is saved with its processor and loaded back through
   `pipeline("automatic-speech-recognition", trust_remote_code=True)`, which transcribes the real recordings of
   pocketsphinx-testdata (printed as heard; ten clips of real speech after synthetic training make no accuracy claim).
"""

import argparse
import io
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly
from transformers import (
    ParakeetCTCConfig,
    ParakeetForCTC,
    Speech2TextFeatureExtractor,
    Trainer,
    TrainingArguments,
    pipeline,
    set_seed,
)

from hf_gru import HybridGRUConfig, HybridGRUForCTC
from hf_gru.metrics import load_metric
from hf_gru.tasks.speech import SAMPLING_RATE, build_processor, normalize_transcript, read_wav

REPO = Path(__file__).resolve().parents[1]
TEXT_DIRS = (REPO / "data" / "text" / "austen", Path("/work/shared/data/text/austen"))
HELD_OUT_NOVELS = ("sensesensibility.txt",)  # the pocketsphinx-testdata recordings read Sense and Sensibility
POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
TITLES = {"Mr": "Mister", "Mrs": "Missus"}  # as espeak-ng reads them
NUM_MEL_BINS = 80

# Two runs: the default (~15 min on 2 cores) and --quick (~2 min, for the slow test).
SETTINGS = {
    "full": dict(train=3600, test=200, steps=1500, batch=16, lr=2e-3, hidden=144, layers=6),
    "quick": dict(train=160, test=24, steps=60, batch=8, lr=2e-3, hidden=64, layers=3),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "asr")
    parser.add_argument("--text-dir", type=Path, default=None, help="folder of .txt novels (default: Austen corpus)")
    parser.add_argument("--models", default="hybrid_gru,parakeet", help="comma-separated: hybrid_gru, parakeet")
    parser.add_argument("--causal", action="store_true", help="train HybridGRU causal (streaming) not bidirectional")
    parser.add_argument("--gru-variant", choices=("gru", "mingru"), default="gru", help="HybridGRU recurrence")
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke run")
    parser.add_argument("--steps", type=int, default=None, help="training steps for every model (overrides)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per model (GRU loops gain little)")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once, one process each")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate for every model (overrides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run")
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------------------------------
# Data: sentences, synthesis, features
# ---------------------------------------------------------------------------------------------------------------------


def load_clauses(text_dir: Path, min_words: int = 4, max_words: int = 14) -> list[str]:
    """Clauses (split at . ! ? ; : and dashes) made only of words and light punctuation, normalised, unique."""
    clauses = []
    for path in sorted(text_dir.glob("*.txt")):
        if path.name in HELD_OUT_NOVELS:
            continue
        text = " ".join(path.read_text(encoding="utf-8").split()).replace("_", "")
        text = re.sub(r"\b(Mrs|Mr)\.", lambda m: TITLES[m.group(1)], text)  # before "." splits the sentence
        for clause in re.split(r"[.!?;:()]+|--", text):
            clause = clause.strip(" ,'\"-")
            if not re.fullmatch(r"[A-Za-z ,'\"\-]+", clause) or clause.isupper():  # no digits/odd symbols/headings
                continue
            normalised = normalize_transcript(clause)
            if min_words <= len(normalised.split()) <= max_words:
                clauses.append(normalised)
    return list(dict.fromkeys(clauses))


def split_sentences(clauses: list[str], num_train: int, num_test: int, seed: int) -> tuple[list[str], list[str]]:
    """Disjoint train and test sentences (the clauses are unique, so no test sentence is ever heard in training)."""
    if len(clauses) < num_train + num_test:
        raise ValueError(f"Only {len(clauses)} usable clauses, fewer than {num_train} + {num_test} requested.")
    order = random.Random(seed).sample(range(len(clauses)), num_train + num_test)
    return [clauses[i] for i in order[num_test:]], [clauses[i] for i in order[:num_test]]


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng -> float32 mono at 16 kHz."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as f:
        rate, raw = f.getframerate(), f.readframes(f.getnframes())
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    common = math.gcd(SAMPLING_RATE, rate)  # espeak-ng speaks at 22050 Hz: up 320, down 441
    return resample_poly(audio, SAMPLING_RATE // common, rate // common).astype(np.float32)


def synthesize_all(sentences: list[str], seed: int, noisy: bool, workers: int) -> list[np.ndarray]:
    """Each sentence with a random voice/variant, speed (140-200 words/min) and pitch; optional noise at 15-40 dB SNR."""
    rng = random.Random(seed)
    jobs = [
        (s, f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}", rng.randint(140, 200), rng.randint(30, 70))
        for s in sentences
    ]
    with ThreadPoolExecutor(workers) as pool:  # espeak-ng runs in subprocesses
        audios = list(pool.map(lambda job: synthesize(*job), jobs))
    if noisy:
        noise_rng = np.random.default_rng(seed)
        for audio in audios:
            power = float(np.mean(audio**2)) + 1e-12
            snr_db = noise_rng.uniform(15, 40)
            audio += noise_rng.standard_normal(len(audio)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return audios


class SpeechDataset(torch.utils.data.Dataset):
    """Items {"input_features": (frames, bins) tensor, "labels": token ids}."""

    def __init__(self, features: list[torch.Tensor], labels: list[list[int]]):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return {"input_features": self.features[i], "labels": self.labels[i]}


def collate(items: list[dict], pad_label: int = -100) -> dict:
    """Right-pads frames (zeros, frame-level attention_mask) and labels (-100)."""
    frames = max(len(item["input_features"]) for item in items)
    label_length = max(len(item["labels"]) for item in items)
    features = torch.zeros(len(items), frames, items[0]["input_features"].shape[-1])
    mask = torch.zeros(len(items), frames, dtype=torch.long)
    labels = torch.full((len(items), label_length), pad_label, dtype=torch.long)
    for i, item in enumerate(items):
        n = len(item["input_features"])
        features[i, :n], mask[i, :n] = item["input_features"], 1
        labels[i, : len(item["labels"])] = torch.tensor(item["labels"])
    return {"input_features": features, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


def build_hybrid_gru(
    vocab_size: int, pad_token_id: int, hidden: int, layers: int, causal: bool, variant: str = "gru"
) -> HybridGRUForCTC:
    config = HybridGRUConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        block_pattern="GGA",
        gru_variant=variant,
        bidirectional=not causal,
        max_position_embeddings=4096,
        num_mel_bins=NUM_MEL_BINS,
        conv_subsampling_channels=hidden,
        classifier_dropout=0.1,
        inputs_to_logits_ratio=4 * 160,  # samples per logit (4 frames of 10 ms): lets the pipeline chunk long audio
    )
    return HybridGRUForCTC(config)


def build_parakeet(vocab_size: int, pad_token_id: int, hidden: int, layers: int) -> ParakeetForCTC:
    """FastConformer CTC (transformers' Parakeet) with the same 4x subsampling; sized near the HybridGRU model."""
    encoder = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        subsampling_factor=4,
        subsampling_conv_channels=hidden // 4,
        num_mel_bins=NUM_MEL_BINS,
        dropout=0.1,
        layerdrop=0.0,
        activation_dropout=0.1,
        attention_dropout=0.1,
    )
    return ParakeetForCTC(ParakeetCTCConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, encoder_config=encoder))


def output_lengths(model: torch.nn.Module, frame_lengths: torch.Tensor) -> torch.Tensor:
    if isinstance(model, HybridGRUForCTC):
        return model.get_output_lengths(frame_lengths)
    return model._get_subsampling_output_length(frame_lengths)


@torch.no_grad()
def transcribe(model: torch.nn.Module, dataset: SpeechDataset, tokenizer, batch_size: int = 16) -> list[str]:
    """Greedy CTC decoding of a padded batch, each row cut at its own number of output frames."""
    model.eval()
    texts = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        logits = model(input_features=batch["input_features"], attention_mask=batch["attention_mask"]).logits
        lengths = output_lengths(model, batch["attention_mask"].sum(-1))
        for row, n in zip(logits.argmax(-1), lengths.tolist(), strict=True):
            texts.append(tokenizer.decode(row[:n]))
    return texts


def train_and_score(name: str, model, train_set, test_set, processor, args, settings: dict) -> dict:
    run_dir = args.output_dir / name
    training_args = TrainingArguments(
        output_dir=str(run_dir / "trainer"),
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch"],
        learning_rate=settings["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=max(settings["steps"] // 10, 1),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(settings["steps"] // 20, 1),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # similar lengths per batch: less padding, faster GRU loops
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_set, data_collator=collate, processing_class=processor
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    predictions = transcribe(model, test_set, processor.tokenizer)
    references = [processor.tokenizer.decode(labels, group_tokens=False) for labels in test_set.labels]
    scores = {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": settings["steps"],
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),  # all threads of this process; wall time varies with load
        "first_train_loss": round(losses[0], 3),
        "final_train_loss": round(losses[-1], 3),
        "wer": load_metric("wer").compute(predictions=predictions, references=references)["wer"],
        "cer": load_metric("cer").compute(predictions=predictions, references=references)["cer"],
        "examples": [{"reference": r, "heard": p} for r, p in list(zip(references, predictions, strict=True))[:3]],
    }
    return scores


def pocketsphinx_recordings() -> list[tuple[Path, str]]:
    """(wav, transcript) pairs of pocketsphinx-testdata's real 16 kHz recordings."""
    pairs = []
    for folder, listing in (("cards", "cards.transcription"), ("librivox", "transcription")):
        listing_path = POCKETSPHINX_DIR / folder / listing
        if not listing_path.is_file():
            continue
        for line in listing_path.read_text().splitlines():
            match = re.fullmatch(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
            if match and (POCKETSPHINX_DIR / folder / f"{match.group(2)}.wav").is_file():
                pairs.append((POCKETSPHINX_DIR / folder / f"{match.group(2)}.wav", " ".join(match.group(1).split())))
    return pairs


def features(processor, audios: list[np.ndarray], cmvn: bool) -> list[torch.Tensor]:
    """Log-mel frames of each utterance; `cmvn` adds Speech2Text's per-utterance mean/variance normalisation."""
    out = []
    for audio in audios:
        frames = processor.feature_extractor(audio, sampling_rate=SAMPLING_RATE)["input_features"][0]
        if cmvn:
            frames = Speech2TextFeatureExtractor.utterance_cmvn(frames, len(frames))
        out.append(torch.from_numpy(np.asarray(frames, dtype=np.float32)))
    return out


def prepare_data(args: argparse.Namespace, settings: dict) -> dict:
    """Sentences, synthesised audio (once, for every model), token ids and the processor."""
    text_dir = args.text_dir or next((d for d in TEXT_DIRS if d.is_dir()), None)
    if text_dir is None:
        raise SystemExit(f"No text corpus found in {[str(d) for d in TEXT_DIRS]}; pass --text-dir.")
    train_text, test_text = split_sentences(load_clauses(text_dir), settings["train"], settings["test"], args.seed)
    start = time.perf_counter()
    workers = os.cpu_count() or 1
    train_audio = synthesize_all(train_text, args.seed, noisy=True, workers=workers)
    test_audio = synthesize_all(test_text, args.seed + 1, noisy=False, workers=workers)
    hours = sum(map(len, train_audio)) / SAMPLING_RATE / 3600
    print(f"synthesised {len(train_audio)} train ({hours:.2f} h) + {len(test_audio)} test utterances "
          f"in {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    processor = build_processor(args.output_dir / "processor", num_mel_bins=NUM_MEL_BINS)
    return {
        "processor": processor,
        "train_audio": train_audio,
        "test_audio": test_audio,
        "train_labels": [processor.tokenizer(t).input_ids for t in train_text],
        "test_labels": [processor.tokenizer(t).input_ids for t in test_text],
    }


def train_model(name: str, data: dict, args: argparse.Namespace, settings: dict) -> None:
    """Trains and scores one model; writes <output-dir>/<name>/scores.json (and the HybridGRU checkpoint)."""
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    processor, cmvn = data["processor"], name == "parakeet"
    train_set = SpeechDataset(features(processor, data["train_audio"], cmvn), data["train_labels"])
    test_set = SpeechDataset(features(processor, data["test_audio"], cmvn), data["test_labels"])
    vocab_size, pad = len(processor.tokenizer), processor.tokenizer.pad_token_id
    if name == "hybrid_gru":
        model = build_hybrid_gru(
            vocab_size, pad, settings["hidden"], settings["layers"], args.causal, args.gru_variant
        )
    else:
        model = build_parakeet(vocab_size, pad, settings["hidden"], settings["layers"])
    scores = train_and_score(name, model, train_set, test_set, processor, args, settings)
    if name == "hybrid_gru":
        scores["model"] = f"hybrid_gru ({'causal' if args.causal else 'bidirectional'}, {args.gru_variant})"
        model.save_pretrained(args.output_dir / name / "checkpoint")
        processor.save_pretrained(args.output_dir / name / "checkpoint")
    (args.output_dir / name).mkdir(parents=True, exist_ok=True)
    (args.output_dir / name / "scores.json").write_text(json.dumps(scores, indent=2))
    print(json.dumps(scores), flush=True)


def train_in_parallel(models: list[str], data: dict, args: argparse.Namespace, settings: dict) -> None:
    """One forked process per model, `--jobs` at a time; they share the synthesised audio copy-on-write.

    Forked before torch has run anything, so no thread pool is copied half-initialised.
    """
    context = multiprocessing.get_context("fork")
    pending, running = list(models), []
    while pending or running:
        while pending and len(running) < args.jobs:
            process = context.Process(target=train_model, args=(pending.pop(0), data, args, settings))
            process.start()
            running.append(process)
        time.sleep(1)
        for process in [p for p in running if not p.is_alive()]:
            running.remove(process)
            if process.exitcode != 0:
                raise SystemExit(f"a training process failed with exit code {process.exitcode}")


def transcribe_real_speech(checkpoint: Path) -> list[dict]:
    """What the saved HybridGRU checkpoint hears on pocketsphinx-testdata, through the transformers ASR pipeline."""
    asr = pipeline("automatic-speech-recognition", model=str(checkpoint), trust_remote_code=True)
    print(f"\nReal recordings (pocketsphinx-testdata) through pipeline('automatic-speech-recognition', {checkpoint}):")
    heard = []
    for wav_path, reference in pocketsphinx_recordings():
        audio, rate = read_wav(wav_path)  # an array: a file path would need ffmpeg
        text = asr({"raw": audio, "sampling_rate": rate})["text"]
        heard.append({"file": wav_path.name, "reference": reference, "heard": text})
        print(f"  {wav_path.name}\n    said:  {reference}\n    heard: {text}")
    if not heard:
        print("  none found: apt-get install -y pocketsphinx-testdata")
    return heard


def main() -> None:
    args = parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: apt-get install -y espeak-ng pocketsphinx-testdata")
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.lr is not None:
        settings["lr"] = args.lr
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"hybrid_gru", "parakeet"})
    if unknown or not models:
        raise ValueError(f"--models: unknown model(s) {unknown or models}; choose from hybrid_gru, parakeet.")
    earlier = [args.output_dir / m for m in ("results.json", "processor", *models) if (args.output_dir / m).exists()]
    if earlier and not args.overwrite:
        raise SystemExit(
            f"{args.output_dir} holds an earlier run ({earlier[0].name}); pass --overwrite to replace it."
        )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args, settings)
    if args.jobs > 1 and len(models) > 1 and "fork" in multiprocessing.get_all_start_methods():
        train_in_parallel(models, data, args, settings)
    else:
        for name in models:
            train_model(name, data, args, settings)

    results = [json.loads((args.output_dir / m / "scores.json").read_text()) for m in models]
    print(
        "\n| model | parameters | steps | train CPU s | test WER | test CER |\n| --- | --- | --- | --- | --- | --- |"
    )
    for r in results:
        print(f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['steps']} | {r['train_cpu_seconds']:.0f} | "
              f"{r['wer']:.3f} | {r['cer']:.3f} |")  # fmt: skip
    torch.set_num_threads(args.threads)
    checkpoint = args.output_dir / "hybrid_gru" / "checkpoint"
    heard = transcribe_real_speech(checkpoint) if "hybrid_gru" in models else []
    (args.output_dir / "results.json").write_text(json.dumps({"results": results, "real_speech": heard}, indent=2))
    print(f"\nwrote {args.output_dir / 'results.json'}")


if __name__ == "__main__":
    main()
