import json
import subprocess
import sys
from pathlib import Path

import pytest

from util_scripts.eval_accuracy import main
from utils import UserError

REPO = Path(__file__).resolve().parents[1]


def entry(subset, label):
    return {'subset': subset, 'annotations': {'label': label, 'segment': [1, 17]}}


# Five validation videos; v5 has no result. Entries are deliberately not sorted by score.
GROUND_TRUTH = {
    'labels': ['A', 'B', 'C'],
    'database': {'v1': entry('validation', 'A'), 'v2': entry('validation', 'B'),
                 'v3': entry('validation', 'C'), 'v4': entry('validation', 'A'),
                 'v5': entry('validation', 'B'), 't1': entry('training', 'C')},
}
RESULTS = {'results': {
    'v1': [{'label': 'B', 'score': 0.1}, {'label': 'A', 'score': 0.9}],  # top-1 right
    'v2': [{'label': 'C', 'score': 0.1}, {'label': 'A', 'score': 0.6},
           {'label': 'B', 'score': 0.3}],  # right from top-2 on
    'v3': [{'label': 'C', 'score': 0.8}],  # top-1 right
    'v4': [{'label': 'A', 'score': 0.2}, {'label': 'B', 'score': 0.5},
           {'label': 'C', 'score': 0.3}],  # right only at top-3
    't1': [{'label': 'A', 'score': 1.0}],  # training video: not counted
    'x9': [{'label': 'A', 'score': 1.0}],  # not in the ground truth: not counted
}}


@pytest.fixture
def paths(tmp_path):
    gt, result = tmp_path / 'gt.json', tmp_path / 'results' / 'val.json'
    result.parent.mkdir()
    gt.write_text(json.dumps(GROUND_TRUTH))
    result.write_text(json.dumps(RESULTS))
    return gt, result


@pytest.mark.parametrize('k, ignore, expected', [
    (1, False, 2 / 5),  # v1, v3 right; v5 missing counts as wrong
    (1, True, 2 / 4),   # v5 left out of the denominator
    (2, True, 3 / 4),
    (3, True, 4 / 4),
    (3, False, 4 / 5),
])
def test_accuracy(paths, k, ignore, expected):
    gt, result = paths
    assert main([str(gt), str(result), '-k', str(k)] + ['--ignore'] * ignore) == expected


def test_seed_spelling_and_save(paths, capsys):
    gt, result = paths
    accuracy = main(['--ground_truth_path', str(gt), '--result_path', str(result),
                     '--subset', 'validation', '--k', '1', '--ignore', '--save'])
    assert accuracy == 0.5
    assert (result.parent / 'top1.txt').read_text() == '0.5\n'
    out = capsys.readouterr().out
    assert 'missing from the result: 1 of 5 ground-truth videos (left out: --ignore)' in out
    assert 'top-1 accuracy: 0.5000 (2/4 videos)' in out


def test_reference_spelling_via_module(paths):
    gt, result = paths
    run = subprocess.run([sys.executable, '-m', 'util_scripts.eval_accuracy', str(gt), str(result),
                          '--subset', 'validation', '-k', '2', '--save'],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert 'ground truth: 5 videos' in run.stdout
    assert 'missing from the result: 1 of 5 ground-truth videos (counted as wrong' in run.stdout
    assert run.stdout.splitlines()[-2] == 'top-2 accuracy: 0.6000 (3/5 videos)'
    assert (result.parent / 'top2.txt').read_text() == '0.6\n'


def test_per_class(paths, capsys):
    gt, result = paths
    main([str(gt), str(result), '--per_class'])
    out = capsys.readouterr().out.splitlines()
    start = out.index('per-class top-1 accuracy:')
    assert out[start + 1:start + 4] == ['  A  0.5000 (1/2)', '  B  0.0000 (0/2)',
                                        '  C  1.0000 (1/1)']


def test_result_without_results_via_module(paths):
    gt, result = paths
    result.write_text(json.dumps({'val': {}}))
    run = subprocess.run([sys.executable, '-m', 'util_scripts.eval_accuracy', str(gt), str(result)],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.count('\n') == 1
    assert run.stderr.startswith(f'error: result json {result} has no "results" object')


def test_user_errors(paths, tmp_path):
    gt, result = paths
    with pytest.raises(UserError, match='-k must be at least 1, got 0'):
        main([str(gt), str(result), '-k', '0'])
    with pytest.raises(UserError, match=r"no labelled videos in subset 'testing' \(its subsets: "
                                        r'training, validation\)'):
        main([str(gt), str(result), '--subset', 'testing'])
    with pytest.raises(UserError, match=f'ground-truth json not found: {tmp_path / "no.json"}'):
        main([str(tmp_path / 'no.json'), str(result)])
    bad = tmp_path / 'bad.json'
    bad.write_text('{"results": ')
    with pytest.raises(UserError, match=f'result json {bad} is not valid json'):
        main([str(gt), str(bad)])
    bad.write_text(json.dumps({'results': {'v1': [{'label': 'Z', 'score': 1}]}}))
    with pytest.raises(UserError, match="video v1: label 'Z' is not in"):
        main([str(gt), str(bad)])
    bad.write_text(json.dumps({'results': {'v1': [{'segment': [1, 17], 'result': []}],
                                           'v2': [{'label': 'B', 'score': 1}]}}))
    with pytest.raises(UserError, match='mixes averaged and per-segment results'):
        main([str(gt), str(bad)])
    bad.write_text(json.dumps({'results': {'x9': [{'label': 'A', 'score': 1}]}}))
    with pytest.raises(UserError, match='none of the 5 ground-truth videos'):
        main([str(gt), str(bad), '--ignore'])
    with pytest.raises(SystemExit):
        main([str(gt)])
    with pytest.raises(SystemExit):
        main([str(gt), str(result), '--result_path', str(bad)])


def clip(first, **scores):
    """A per-segment entry of main.py --inference_no_average (scores listed unsorted)."""
    return {'segment': [first, first + 16],
            'result': [{'label': label, 'score': score} for label, score in scores.items()]}


# --inference_no_average with --output_topk 0: every class in every clip. Top-1 by hand:
#   v1 (A): clips A, B, B -> 1/3 right; averages A .4, B .45, C .15 -> B: wrong
#   v2 (B): clips A, B    -> 1/2 right; averages A .275, B .65       -> B: right
#   v3 (C): clip C        -> 1/1 right                                -> C: right
#   v4 (A): clips C, C    -> 0/2 right; averages C .45, A .325       -> C: wrong
#   clips 3/8 = 0.375; videos 2/4 with --ignore (v5 has no result), 2/5 without
PER_CLIP = {'results': {
    'v1': [clip(1, A=0.5, B=0.3, C=0.2), clip(17, C=0.1, A=0.3, B=0.6),
           clip(33, A=0.4, B=0.45, C=0.15)],
    'v2': [clip(1, B=0.4, A=0.5, C=0.1), clip(17, A=0.05, B=0.9, C=0.05)],
    'v3': [clip(1, A=0.2, B=0.1, C=0.7)],
    'v4': [clip(1, A=0.3, B=0.2, C=0.5), clip(17, A=0.35, B=0.25, C=0.4)],
    't1': [clip(1, A=1.0, B=0.0, C=0.0)],  # training video: none of its clips counted
}}


@pytest.fixture
def per_clip_paths(paths):
    gt, result = paths
    result.write_text(json.dumps(PER_CLIP))
    return gt, result


def test_per_clip_results_give_clip_and_video_accuracy(per_clip_paths, capsys):
    gt, result = per_clip_paths
    assert main([str(gt), str(result), '--ignore', '--save']) == 2 / 4  # the video accuracy
    assert (result.parent / 'top1.txt').read_text() == '0.5\n'
    out = capsys.readouterr().out
    assert f'result: 5 videos, 9 clips (not averaged: --inference_no_average) in {result}' in out
    assert 'note:' not in out  # every clip lists every class
    assert ('top-1 accuracy: clip 0.3750 (3/8 clips)  video 0.5000 (2/4 videos, clip scores '
            'averaged)') in out
    assert main([str(gt), str(result)]) == 2 / 5
    # top-2: every clip and every video has its label among its best two
    assert main([str(gt), str(result), '-k', '2', '--ignore']) == 1
    assert 'top-2 accuracy: clip 1.0000 (8/8 clips)  video 1.0000 (4/4 videos' in \
        capsys.readouterr().out


def test_per_clip_per_class(per_clip_paths, capsys):
    gt, result = per_clip_paths
    main([str(gt), str(result), '--per_class'])
    out = capsys.readouterr().out.splitlines()
    start = out.index('per-class top-1 accuracy:')
    # A: clips of v1 (1/3) and v4 (0/2); B: v2's clips (v5 has none), v5 counted as a wrong video
    assert out[start + 1:start + 4] == ['  A  clip 0.2000 (1/5)  video 0.0000 (0/2)',
                                        '  B  clip 0.5000 (1/2)  video 0.5000 (1/2)',
                                        '  C  clip 1.0000 (1/1)  video 1.0000 (1/1)']


def test_clips_with_only_their_top_classes_average_missing_ones_as_zero(paths, capsys):
    """--output_topk 1: v1 (A) lists A .5, A .5, B .9; A's average (0.5 + 0.5 + 0) / 3 beats
    B's (0 + 0 + 0.9) / 3, so v1 is right (averaging only the clips that list a class would give
    A .5 < B .9). Its clips are 2/3 right."""
    gt, result = paths
    result.write_text(json.dumps({'results': {
        'v1': [clip(1, A=0.5), clip(17, A=0.5), clip(33, B=0.9)]}}))
    assert main([str(gt), str(result), '--ignore']) == 1
    out = capsys.readouterr().out
    assert 'note: clips list only their top classes (--output_topk)' in out
    assert 'top-1 accuracy: clip 0.6667 (2/3 clips)  video 1.0000 (1/1 videos' in out
