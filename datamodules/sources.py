"""Puzzle CSV files on disk or fetched from the Hugging Face hub, and the validation / test heads of a test file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]


def find_csv(data_dir: Path, name: str) -> Path | None:
    """`name`.csv or `name`.csv.gz in data_dir, whichever exists."""
    for suffix in (".csv", ".csv.gz"):
        path = data_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def ensure_csv_files(data_dir: Path, download: bool, repo_id: str, title: str) -> dict[str, Path]:
    """Paths of train and test CSVs in data_dir; fetch missing ones from the Hugging Face hub when `download`.

    Raises:
        FileNotFoundError: naming the expected paths and where to get the files, when they are missing.
        ImportError: when download is asked for without the huggingface_hub package.
        RuntimeError: when the download itself fails (network), naming where to place the files by hand.
    """
    missing = [name for name in ("train", "test") if find_csv(data_dir, name) is None]
    if missing and download:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as err:
            raise ImportError(
                "download=true needs the huggingface_hub package: pip install huggingface_hub "
                f"(or place train.csv and test.csv in {data_dir} yourself)"
            ) from err
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in missing:
            try:
                hf_hub_download(repo_id=repo_id, filename=f"{name}.csv", repo_type="dataset", local_dir=str(data_dir))
            except Exception as err:
                raise RuntimeError(
                    f"could not download {name}.csv of the Hugging Face dataset {repo_id} ({err}); check the "
                    f"network, or download it by hand from https://huggingface.co/datasets/{repo_id} and place "
                    f"it at {data_dir / f'{name}.csv'}"
                ) from err
        missing = [name for name in ("train", "test") if find_csv(data_dir, name) is None]
    if missing:
        expected = " and ".join(str(data_dir / f"{name}.csv") for name in missing)
        raise FileNotFoundError(
            f"{title} data not found: expected {expected} (or .csv.gz). Get train.csv and test.csv from the "
            f"Hugging Face dataset {repo_id} (https://huggingface.co/datasets/{repo_id}) into {data_dir}, "
            "or pass download=true"
        )
    return {name: find_csv(data_dir, name) for name in ("train", "test")}  # type: ignore[misc]


def head_splits(train: Arrays, test: Arrays, val_size: int, test_size: int | None, path: Path) -> dict[str, Arrays]:
    """Validation = the first val_size test rows, test = the first test_size rows (None: all)."""
    test_q, test_a = test
    if len(test_q) == 0:
        raise ValueError(f"{path} holds no examples")
    n_test = len(test_q) if test_size is None else min(test_size, len(test_q))
    return {"train": train, "val": (test_q[:val_size], test_a[:val_size]), "test": (test_q[:n_test], test_a[:n_test])}
