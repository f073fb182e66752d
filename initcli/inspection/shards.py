"""A folder of shards read as one file: through its `*.safetensors.index.json` or
`pytorch_model*.bin.index.json` (every shard it names inside the folder, or inside the blob
store of a Hugging Face snapshot), else every `*.safetensors` in it."""

from __future__ import annotations

import os
from pathlib import Path

from .safetensors_reader import SafetensorsSource
from .source import Source, contained, error_text, parse_json, read_config, reading_file, refuse
from .torch_reader import TorchSource

_INDEX_MAX = 64 * 2**20  # a shard index: ~100 kB for the largest public models


def _read_index(index: Path) -> dict[str, str]:
    """A sharded checkpoint's weight_map (tensor name -> shard file name)."""
    with reading_file(index):
        if not index.is_file():
            raise refuse(index, "is not a regular file")
        if index.stat().st_size > _INDEX_MAX:
            raise refuse(index, f"is larger than a shard index can be ({_INDEX_MAX >> 20} MiB)")
        data = index.read_bytes()
    try:
        weight_map = parse_json(data)["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise refuse(index, f"is not a sharded-checkpoint index ({error_text(exc)})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise refuse(index, "is not a sharded-checkpoint index (its weight_map does not map names to files)")
    return weight_map


def _index_shards(index: Path) -> list[Path]:
    folder = index.parent
    weight_map = _read_index(index)
    if not weight_map:
        raise refuse(index, "holds no tensors (its weight_map is empty)")
    files = []
    for shard in dict.fromkeys(weight_map.values()):
        file = contained(folder, shard)
        if file is None and not os.path.isabs(shard) and os.path.islink(folder / shard) \
                and ".." not in Path(shard).parts:
            with reading_file(folder / shard):
                os.stat(folder / shard)  # a link that cannot be followed: a read failure naming it
        if file is None:
            raise refuse(index, f"names the shard '{shard}', which lies outside '{folder}': initcli reads only "
                                f"shards inside the checkpoint's folder (or its Hugging Face cache's blobs)")
        with reading_file(file):
            if not file.exists():
                raise refuse(index, f"names the shard '{shard}', which is missing from '{folder}'")
            if not file.is_file():
                raise refuse(file, "is not a regular file")
        files.append(file)
    return files


class ShardedSource(Source):
    """A folder of shards read as one file; a tensor name in two shards is refused."""

    def __init__(self, folder: Path, shards: list[Source], config: dict | None) -> None:
        self.path = str(folder)
        self.format = shards[0].format if shards else "safetensors"
        self.config = config
        self._shards = shards
        self._owner = {}
        entries, skipped = [], []
        for shard in shards:
            for entry in shard.entries:
                if entry.name in self._owner:
                    raise refuse(shard.path, f"holds '{entry.name}', which another shard holds too")
                self._owner[entry.name] = shard
                entries.append(entry)
            skipped.extend((f"{Path(shard.path).name}: {what}", why) for what, why in shard.skipped)
        if not entries:
            raise refuse(folder, "holds no tensors")
        self.entries = tuple(entries)
        self.skipped = tuple(skipped)

    def read(self, name: str):
        return self._owner[name].read(name)

    def close(self) -> None:
        for shard in self._shards:
            shard.close()


def open_folder(folder: Path) -> Source:
    with reading_file(folder):
        os.listdir(folder)  # glob would take an unreadable folder for an empty one
        safetensors_indexes = sorted(folder.glob("*.safetensors.index.json"))
        torch_indexes = sorted(folder.glob("*.bin.index.json")) + sorted(folder.glob("*.pt.index.json"))
        loose = sorted(p for p in folder.glob("*.safetensors"))
    config = read_config(folder)
    shards: list[Source] = []
    try:
        if safetensors_indexes:
            for file in _index_shards(safetensors_indexes[0]):
                shards.append(SafetensorsSource(file))
        elif torch_indexes:
            for file in _index_shards(torch_indexes[0]):
                shards.append(TorchSource(file))
        elif loose:
            for file in loose:
                shards.append(SafetensorsSource(file))
        else:
            raise refuse(folder, "is a folder without weights (inspect reads a folder through its "
                                 "*.safetensors.index.json or pytorch_model.bin.index.json, else every "
                                 "*.safetensors in it)")
        return ShardedSource(folder, shards, config)
    except BaseException:
        for shard in shards:
            shard.close()
        raise
