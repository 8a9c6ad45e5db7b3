"""Checkpoints: written atomically, verified when read, and the training state they restore.

A checkpoint of epoch N is two files in the result folder:

    save_N.pdparams   the model's state dict (what --pretrain_path and the scripts also read)
    save_N.pdopt      its format number, epoch, arch, optimizer, scheduler, best scores,
                      random states, --amp's GradScaler, the SHA-256 of save_N.pdparams and
                      one of this state itself

The .pdopt is written last and marks the checkpoint complete. Reading one verifies both files:
a damaged checkpoint given by name ends the run with one line; in a result folder given to
--resume_path, it is skipped with a warning and the newest intact one is used. A checkpoint of
a newer format (a newer version of this toolkit) ends the run with one line that says so.
"""
import dataclasses
import hashlib
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import paddle

from utils import BestScores, UserError

# Disk space of a checkpoint per byte of the model's state dict: .pdparams holds the state dict,
# .pdopt a momentum buffer per trainable parameter (2x together); 3x leaves room for the logs.
CHECKPOINT_SIZE_FACTOR = 3
CHECKPOINT_NAME = re.compile(r'save_(\d+)\.(pdparams|pdopt)')
# The format of the .pdopt this version writes (its 'format'). A version that adds, drops or
# reinterprets a key, or computes a checksum otherwise, writes the next number: older versions
# then say the checkpoint is newer rather than damaged. Checkpoints without 'format' (0) are
# those of the versions before it, and read as ever.
CHECKPOINT_FORMAT = 1
# What a .pdopt of format <= CHECKPOINT_FORMAT holds; a key outside these is damage (a flipped
# bit that renamed 'state_sha256' would otherwise pass for a checkpoint of a version without it).
STATE_KEYS = {'format', 'epoch', 'arch', 'optimizer', 'scheduler', 'best', 'rng', 'scaler',
              'weights_sha256', 'state_sha256'}


class Checkpoint(NamedTuple):
    path: Path  # save_N.pdparams
    weights: dict
    state: dict  # the .pdopt


class DamagedCheckpoint(UserError):
    """A checkpoint file that cannot be read, or whose weights do not match their checksum."""


class NewerCheckpoint(UserError):
    """A checkpoint of a format this version cannot read: written by a newer version."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with path.open('rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def state_digest(state) -> str:
    """SHA-256 of a training state's contents (all but its own 'state_sha256'), the same before
    `paddle.save` and after `paddle.load`: arrays and tensors by dtype, shape and bytes (the file
    turns arrays into tensors), other leaves by their pickle."""
    digest = hashlib.sha256()

    def add(value):
        if isinstance(value, dict):
            digest.update(b'{')
            for key in sorted(value, key=str):
                if key != 'state_sha256':
                    add(key)
                    add(value[key])
            digest.update(b'}')
        elif isinstance(value, (list, tuple)):
            digest.update(b'[' if isinstance(value, list) else b'(')
            for item in value:
                add(item)
            digest.update(b']')
        elif isinstance(value, (np.ndarray, paddle.Tensor)):
            array = np.asarray(value.numpy() if isinstance(value, paddle.Tensor) else value)
            digest.update(f'{array.dtype.str}{array.shape}'.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        else:
            digest.update(pickle.dumps(value, protocol=4))

    add(state)
    return digest.hexdigest()


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + '.tmp')


def _fsync(path: Path) -> None:
    """Flush a file to the disk before it is renamed into place: some file systems report a full
    disk only then, and a rename after a power cut must not find it empty."""
    with path.open('rb') as f:
        os.fsync(f.fileno())


def save_checkpoint(result_path: Path, epoch: int, arch: str, model, optimizer, scheduler,
                    best: BestScores, scaler=None) -> None:
    """Write save_{epoch}.pdparams and save_{epoch}.pdopt atomically.

    Both go to .tmp files and are renamed into place when both are complete. The .pdopt marks a
    checkpoint complete, so an earlier save_{epoch}.pdopt is removed before the renames: at no
    moment do weights and state of two different writes pair up. A failed write (a full disk)
    or an interrupt leaves no .tmp file behind. `scaler`: --amp's GradScaler.
    """
    params, pdopt = result_path / f'save_{epoch}.pdparams', result_path / f'save_{epoch}.pdopt'
    try:
        paddle.save(model.state_dict(), str(_tmp(params)))
        _fsync(_tmp(params))
        state = {'format': CHECKPOINT_FORMAT, 'epoch': epoch, 'arch': arch,
                 'optimizer': structured_optimizer_state(model, optimizer.state_dict(), True),
                 'scheduler': scheduler.state_dict(), 'best': dataclasses.asdict(best),
                 'rng': get_rng_state(), 'weights_sha256': file_digest(_tmp(params))}
        if scaler is not None:
            state['scaler'] = scaler.state_dict()
        state['state_sha256'] = state_digest(state)
        paddle.save(state, str(_tmp(pdopt)))
        _fsync(_tmp(pdopt))
        pdopt.unlink(missing_ok=True)
        os.replace(_tmp(params), params)
        os.replace(_tmp(pdopt), pdopt)
    except OSError as e:
        raise UserError(f'cannot write checkpoint {params}: {e}; '
                        f'{resume_hint(result_path)}') from e
    finally:
        for path in (params, pdopt):
            _tmp(path).unlink(missing_ok=True)


def read_checkpoint(path: Path, arch: str) -> Checkpoint:
    """The weights and state of the checkpoint `path` (save_N.pdparams), verified; made for
    `arch`. A missing, unreadable or damaged file: `DamagedCheckpoint` naming it."""
    pdopt = path.with_suffix('.pdopt')
    for required, holds in ((path, 'the weights'), (pdopt, 'the epoch and optimizer')):
        if not required.is_file():
            raise DamagedCheckpoint(f'{required} is missing (it holds {holds})')
    state = _load(pdopt)
    if isinstance(state, dict) and _is_newer(state):
        raise NewerCheckpoint(f'{pdopt} was written by a newer version of this toolkit '
                              f'(checkpoint format {state["format"]}; this version reads up to '
                              f'{CHECKPOINT_FORMAT}): resume with that version')
    if not isinstance(state, dict) or 'epoch' not in state:
        raise DamagedCheckpoint(f'{pdopt} is not the training state of a checkpoint')
    if not _state_intact(state):
        raise DamagedCheckpoint(f'{pdopt} is damaged: its contents do not match their checksum')
    if path.stat().st_size == 0:
        raise DamagedCheckpoint(f'{path} is damaged: empty')
    _check_weights(path, state)
    if state.get('arch') != arch:
        raise UserError(f'--resume_path {path} was saved by {state.get("arch")}, '
                        f'but the model is {arch}')
    return Checkpoint(path, _load(path), state)


def _is_newer(state: dict) -> bool:
    """Whether a .pdopt's format is above this version's (its keys and checksums then may
    mean what this version cannot tell)."""
    number = state.get('format', 0)
    return isinstance(number, (int, np.integer)) and number > CHECKPOINT_FORMAT


def _state_intact(state: dict) -> bool:
    """Whether a .pdopt's contents are those written (its checksum; older checkpoints have
    none)."""
    if not set(state) <= STATE_KEYS:
        return False
    return 'state_sha256' not in state or state_digest(state) == state['state_sha256']


def _check_weights(path: Path, state: dict) -> None:
    expected = state.get('weights_sha256')  # absent in checkpoints of earlier versions
    if expected is not None and file_digest(path) != expected:
        raise DamagedCheckpoint(f'{path} is damaged: its contents do not match the checksum '
                                f"recorded in {path.with_suffix('.pdopt').name}")


def verify_weights(path: Path) -> None:
    """Check a checkpoint's weights (save_N.pdparams) read as pretrained weights against the
    checksum its save_N.pdopt records: `DamagedCheckpoint` if they differ. Other weights files,
    and a .pdopt that is absent, unreadable or of a newer format, leave nothing to check."""
    pdopt = path.with_suffix('.pdopt')
    if not CHECKPOINT_NAME.fullmatch(path.name) or not pdopt.is_file():
        return
    try:
        state = paddle.load(str(pdopt), return_numpy=True)  # arrays: nothing on a GPU
    except Exception:  # the weights may still be good: paddle.load judges them next
        return
    if isinstance(state, dict) and not _is_newer(state) and _state_intact(state):
        # a damaged .pdopt proves nothing, nor one whose checksums this version cannot read
        _check_weights(path, state)


def _load(path: Path):
    try:
        return paddle.load(str(path))
    except Exception as e:  # Paddle raises ValueError, EOFError, pickle errors, ...
        size = path.stat().st_size
        what = 'empty' if size == 0 else f'unreadable ({size} bytes; {type(e).__name__})'
        raise DamagedCheckpoint(f'{path} is damaged: {what}') from e


def complete_checkpoints(folder: Path) -> list:
    """The save_N.pdparams of `folder` whose .pdopt exists, newest first."""
    epochs = []
    for f in folder.glob('save_*.pdopt'):
        m = CHECKPOINT_NAME.fullmatch(f.name)
        if m and f.with_suffix('.pdparams').exists():
            epochs.append(int(m.group(1)))
    return [folder / f'save_{epoch}.pdparams' for epoch in sorted(epochs, reverse=True)]


def checkpoint_path(resume_path: Path) -> Path:
    """save_N.pdparams of `save_N.pdparams`, `save_N.pdopt` or `save_N`."""
    path = Path(resume_path)
    if path.suffix == '.pdopt':
        return path.with_suffix('.pdparams')
    return path if path.suffix == '.pdparams' else path.with_name(path.name + '.pdparams')


def load_checkpoint(resume_path: Path, arch: str) -> Checkpoint:
    """--resume_path: a checkpoint (`save_N.pdparams`, `save_N.pdopt`, `save_N`) or a result
    folder, whose newest intact checkpoint is used (damaged newer ones skipped, each with a
    warning)."""
    resume_path = Path(resume_path)
    if not resume_path.is_dir():
        path = checkpoint_path(resume_path)
        if not path.exists() and not path.with_suffix('.pdopt').exists():
            raise UserError(f'--resume_path: checkpoint not found: {path}')
        try:
            return read_checkpoint(path, arch)
        except (DamagedCheckpoint, NewerCheckpoint) as e:
            raise UserError(f'--resume_path: {e}') from None
    candidates = complete_checkpoints(resume_path)
    newest_parts = [int(m.group(1)) for f in resume_path.glob('save_*')
                    if (m := CHECKPOINT_NAME.fullmatch(f.name))]
    if newest_parts and (not candidates or max(newest_parts) > _epoch(candidates[0])):
        epoch = max(newest_parts)
        warnings.warn(f'--resume_path: skipping save_{epoch} in {resume_path}: one of its two '
                      'files (.pdparams, .pdopt) is missing')
    for path in candidates:
        try:
            return read_checkpoint(path, arch)
        except DamagedCheckpoint as e:
            warnings.warn(f'--resume_path: skipping {path.name}: {e}')
        except NewerCheckpoint as e:  # not skipped: resuming from an older one would lose it
            raise UserError(f'--resume_path: {e}') from None
    raise UserError(f'--resume_path {resume_path}: no intact checkpoint (save_N.pdparams with '
                    'its .pdopt) there')


def _epoch(path: Path) -> int:
    return int(CHECKPOINT_NAME.fullmatch(path.name).group(1))


def resume_hint(result_path: Path) -> str:
    """What a rerun can resume from: the newest complete checkpoint in `result_path`, or none."""
    candidates = complete_checkpoints(result_path) if result_path.is_dir() else []
    if not candidates:
        return f'no complete checkpoint in {result_path} to resume from'
    return f'resume from {candidates[0].name} with --resume_path {result_path}'


def remove_unfinished_checkpoints(result_path: Path) -> None:
    """Delete the .tmp files of a checkpoint write that a kill cut short."""
    unfinished = sorted(result_path.glob('save_*.tmp'))
    for path in unfinished:
        path.unlink()
    if unfinished:
        print(f'removed {", ".join(p.name for p in unfinished)}: unfinished checkpoint files '
              'of an interrupted run')


def check_free_space(result_path: Path, model) -> None:
    """Stop before training, not hours into it, when --result_path has no room for a checkpoint."""
    model_bytes = sum(int(t.numel()) * t.element_size() for t in model.state_dict().values())
    needed = CHECKPOINT_SIZE_FACTOR * model_bytes
    free = shutil.disk_usage(result_path).free
    if free < needed:
        raise UserError(f'--result_path {result_path} has {free / 2**20:.0f} MB free; a '
                        f'checkpoint needs about {needed / 2**20:.0f} MB')


def structured_optimizer_state(model, state: dict, to_structured: bool) -> dict:
    """Rename optimizer accumulators between Paddle's unique parameter names and the model's
    structured names, so that a checkpoint loads into a model built in another process."""
    pairs = [(p.name, name) for name, p in model.named_parameters()]
    if not to_structured:
        pairs = [(structured, unique) for unique, structured in pairs]
    # longest first, so that no name is taken for the prefix of a longer one
    prefixes = sorted(((source + '_', target + '_') for source, target in pairs),
                      key=lambda pair: -len(pair[0]))
    renamed = {}
    for key, value in state.items():
        prefix = next(((s, t) for s, t in prefixes if key.startswith(s)), None)
        renamed[prefix[1] + key[len(prefix[0]):] if prefix else key] = value
    return renamed


def restore_training_state(checkpoint: Optional[Checkpoint], model, optimizer=None,
                           scheduler=None, scaler=None, milestones=None) -> BestScores:
    """Put a checkpoint back: the model's weights, optimizer, scheduler (`milestones`: replaced,
    for --overwrite_milestones), GradScaler, random states; returns its best scores (fresh ones
    without a checkpoint). Each of optimizer, scheduler, scaler is optional (--no_train)."""
    if checkpoint is None:
        return BestScores()
    model.set_state_dict(checkpoint.weights)
    state = checkpoint.state
    if optimizer is not None:
        optimizer.set_state_dict(structured_optimizer_state(model, state['optimizer'], False))
    if scheduler is not None:
        scheduler.set_state_dict(state['scheduler'])
        if milestones is not None:
            scheduler.milestones = milestones
    if scaler is not None and state.get('scaler'):
        scaler.load_state_dict(state['scaler'])
    if 'rng' in state:
        # where the interrupted run left them (each epoch then reseeds from (seed, epoch))
        set_rng_state(state['rng'])
    return BestScores(**state.get('best', {}))


def _device_kind() -> str:
    return paddle.device.get_device().split(':')[0]  # 'cpu', 'gpu', ...


def get_rng_state() -> dict:
    """The states of Python's, NumPy's and Paddle's generators (Paddle's: one per device of the
    current kind, e.g. one per visible GPU).

    NumPy's key is a list, not an array: `paddle.load` turns the arrays of a file into tensors.
    """
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {'python': random.getstate(), 'numpy': [name, key.tolist(), pos, has_gauss, gauss],
            'paddle': paddle.get_rng_state(), 'paddle_device': _device_kind()}


def set_rng_state(state: dict) -> None:
    """Restore the generators from `get_rng_state()`. Paddle's states are restored as far as
    they match this process's devices (a run saved on 8 GPUs and resumed on 1 or on the CPU
    restores what it can), with one warning about the rest: every epoch reseeds anyway."""
    random.setstate(state['python'])
    name, key, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, np.asarray(key, np.uint32), pos, has_gauss, gauss))
    saved, current = list(state['paddle']), paddle.get_rng_state()
    saved_kind = state.get('paddle_device', _device_kind())
    if saved_kind != _device_kind():
        warnings.warn(f"the checkpoint's Paddle random state is of {len(saved)} {saved_kind} "
                      f'device(s), this run is on {_device_kind()}: not restored (each epoch '
                      'reseeds from --manual_seed)')
        return
    if len(saved) != len(current):
        warnings.warn(f"the checkpoint's Paddle random state is of {len(saved)} "
                      f'{saved_kind} device(s), this run has {len(current)}: restored for the '
                      f'first {min(len(saved), len(current))}')
        saved = saved[:len(current)] + current[len(saved):]
    paddle.set_rng_state(saved)
