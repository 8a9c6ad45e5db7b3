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
    bad.write_text(json.dumps({'results': {'v1': [{'segment': [1, 17], 'result': []}]}}))
    with pytest.raises(UserError, match='per-segment results'):
        main([str(gt), str(bad)])
    bad.write_text(json.dumps({'results': {'x9': [{'label': 'A', 'score': 1}]}}))
    with pytest.raises(UserError, match='none of the 5 ground-truth videos'):
        main([str(gt), str(bad), '--ignore'])
    with pytest.raises(SystemExit):
        main([str(gt)])
    with pytest.raises(SystemExit):
        main([str(gt), str(result), '--result_path', str(bad)])
