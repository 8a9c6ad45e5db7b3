"""util_scripts.benchmark's profile job (util_scripts/benchmarking/train.py): where a training
step's time goes, from oneDNN's own timings of each primitive, on our side and on PyTorch's."""
import dataclasses

import pytest

from models import onednn
from models.onednn import dnnl
from util_scripts.benchmarking import train, workloads
from util_scripts.benchmarking.case import Case

TINY = Case(job='profile', impl='paddle', depth=10, batch_size=2, sample_duration=4,
            sample_size=32, warmup=1, repeats=2, threads=2)


def test_verbose_lines_are_summed_by_kind_and_pass():
    lines = [
        'onednn_verbose,v1,info,oneDNN v3.6.2 (commit 2eb3dd1)',
        'onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx512_core,'
        'forward_training,src:f32::blocked:aBcde16b::f0,,alg:convolution_direct,mb2_ic16oc16,9',
        'onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_training,'
        'src:f32::blocked:aBcde16b::f0 dst:f32::blocked:aBcde16b::f0,attr-scratchpad:user,'
        'alg:convolution_direct,mb2_ic16oc16,2.5',
        'onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_inference,'
        'src:f32::blocked:aBcde16b::f0,,alg:convolution_direct,mb2_ic16oc16,0.5',
        'onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core_bf16,'
        'backward_weights,src:bf16::blocked:aBcde16b::f0,,alg:convolution_direct,mb2,1.25',
        'onednn_verbose,exec,cpu,convolution,gemm:jit,backward_data,src:f32::blocked:abcde::f0,'
        ',alg:convolution_direct,mb2,0.75',  # oneDNN 3.0-3.3's lines: no 'v1,primitive'
        'onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,'
        'src:f32::blocked:abcde::f0 dst:bf16::blocked:aBcde16b::f0,,,2x3x16x112x112,0.25',
        'onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src dst,,,64x3,0.125',
        'onednn_verbose,v1,primitive,exec,cpu,pooling,jit:avx512_core,forward_training,'
        'src:f32 dst:f32 ws:u8,,alg:pooling_max,mb2ic64,3',
        'a line of the program itself, exec, 100',
    ]
    times, calls = train.onednn_verbose_times(lines)
    assert times == {'conv forward': 3.0, 'conv backward data': 0.75,
                     'conv backward weights': 1.25, 'reorders': 0.375, 'other oneDNN': 3.0}
    assert calls == {'conv forward': 2, 'conv backward data': 1, 'conv backward weights': 1,
                     'reorders': 2, 'other oneDNN': 1}


def n_convolutions() -> int:
    import paddle
    return sum(isinstance(layer, paddle.nn.Conv3D)
               for layer in workloads.paddle_model(TINY).sublayers())


def assert_profile_of_a_step(result, capfd):
    groups = result['groups']
    # each convolution of each step, the last ones included (C's stdout buffer flushed)
    assert result['calls']['conv forward'] == n_convolutions()
    assert set(groups) == set(train.PROFILE_COLUMNS)
    for group in ('conv forward', 'conv backward data', 'conv backward weights', 'reorders'):
        assert groups[group] > 0, group
    # the rest of the step is what the groups leave of it (timed in other calls: no sign here)
    assert sum(groups.values()) == pytest.approx(result['step_ms'])
    assert 'verbose' not in capfd.readouterr().out  # the lines went to the capture file only


@pytest.mark.skipif(onednn.load_error() is not None,
                    reason=f'oneDNN not loadable: {onednn.load_error()}')
@pytest.mark.usefixtures('cpu')
def test_profile_of_our_training_step_times_each_kind_of_primitive(capfd):
    assert_profile_of_a_step(train.paddle_profile(TINY), capfd)


def test_profile_of_pytorchs_training_step_times_each_kind_of_primitive(capfd):
    pytest.importorskip('torch')
    assert_profile_of_a_step(train.torch_profile(dataclasses.replace(TINY, impl='torch')), capfd)


def test_profile_without_onednn_says_why(monkeypatch):
    monkeypatch.setattr(dnnl, '_loaded', dnnl.Loaded(None, 'OSError: libdnnl.so.3: cannot open'))
    with pytest.raises(RuntimeError, match='no oneDNN to profile: OSError: libdnnl.so.3'):
        with train.paddle_onednn_verbose():
            pass


def test_a_case_reaches_the_subprocess_as_it_was_made():
    import json
    case = dataclasses.replace(TINY, job='data', frame_size=(64, 48), video_path='/data/jpg')
    assert Case.from_json(json.loads(json.dumps(case.to_json()))) == case
