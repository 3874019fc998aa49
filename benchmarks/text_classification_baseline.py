"""TF-IDF (word 1-2-grams) + logistic regression on a text-classification jsonl: the non-neural baseline of the
fine-food reviews table in README, on the same training split as `examples/train_text_classification.py` (10% of
train held out with the seed, then the first `--max_train_samples` rows).

    python benchmarks/text_classification_baseline.py \
        --train_file ../shared/data/classification/fine_food_reviews/train.jsonl \
        --test_file ../shared/data/classification/fine_food_reviews/test.jsonl --max_train_samples 2000
"""

import argparse
import json

import datasets
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_file", required=True)
    parser.add_argument("--test_file", required=True)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--validation_split_percentage", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--C", type=float, default=10.0, help="inverse regularisation strength")
    args = parser.parse_args()
    raw = datasets.load_dataset("json", data_files={"train": args.train_file, "test": args.test_file})
    train = raw["train"].train_test_split(test_size=args.validation_split_percentage / 100, seed=args.seed)["train"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    classifier = LogisticRegression(C=args.C, max_iter=2000).fit(
        vectorizer.fit_transform(train["text"]), train["label"]
    )
    predictions = classifier.predict(vectorizer.transform(raw["test"]["text"]))
    references = raw["test"]["label"]
    scores = {
        "train_samples": len(train),
        "test_accuracy": round(accuracy_score(references, predictions), 4),
        "test_f1": round(f1_score(references, predictions, average="macro"), 4),
    }
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
