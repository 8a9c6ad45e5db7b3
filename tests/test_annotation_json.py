"""ucf101_json, hmdb51_json, kinetics_json, mit_json and add_fps_into_activitynet_json."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from util_scripts import (add_fps_into_activitynet_json, hmdb51_json, kinetics_json, mit_json,
                          ucf101_json)
from util_scripts.utils import find_ffmpeg
from utils import UserError

REPO = Path(__file__).resolve().parents[1]


def make_frames(jpg_dir: Path, label: str, video_id: str, n_frames: int) -> None:
    """A frame folder as generate_video_jpgs leaves it (empty files: only names are counted)."""
    folder = jpg_dir / label / video_id
    folder.mkdir(parents=True)
    for i in range(1, n_frames + 1):
        (folder / f'image_{i:05d}.jpg').touch()


def run_module(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', f'util_scripts.{name}', *map(str, args)],
                          cwd=REPO, capture_output=True, text=True)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# UCF-101 ----------------------------------------------------------------------------------------

UCF_CLASSES = ['Zumba', 'ApplyLipstick', 'Biking']  # not sorted: the order of classInd.txt counts


@pytest.fixture
def ucf(tmp_path):
    """3 classes, 2 videos each; split s tests group s. CRLF endings, as in the real lists."""
    annotations, jpg = tmp_path / 'annotations', tmp_path / 'jpg'
    annotations.mkdir()
    (annotations / 'classInd.txt').write_bytes(
        ''.join(f'{i} {c}\r\n' for i, c in enumerate(UCF_CLASSES, 1)).encode())
    for split in (1, 2, 3):
        train, test = [], []
        for index, c in enumerate(UCF_CLASSES, 1):
            for group in (1, 2):
                path = f'{c}/v_{c}_g{group:02d}_c01.avi'
                (test if group == split else train).append(path)
        (annotations / f'trainlist0{split}.txt').write_bytes(
            ''.join(f'{p} {UCF_CLASSES.index(p.split("/")[0]) + 1}\r\n' for p in train).encode())
        (annotations / f'testlist0{split}.txt').write_bytes(
            ''.join(f'{p}\r\n' for p in test).encode())
    for index, c in enumerate(UCF_CLASSES):
        make_frames(jpg, c, f'v_{c}_g01_c01', 10 + index)
        if c != 'Biking':  # Biking's group-2 video was never extracted
            make_frames(jpg, c, f'v_{c}_g02_c01', 20 + index)
    (jpg / 'Zumba' / 'v_Zumba_g01_c01' / 'thumbnail.png').touch()  # not a frame
    return annotations, jpg


def test_ucf101_json(ucf, tmp_path, capsys):
    annotations, jpg = ucf
    dst = tmp_path / 'json' / 'ucf'
    ucf101_json.main([str(annotations), str(jpg), str(dst)])

    assert sorted(p.name for p in dst.iterdir()) == ['ucf101_01.json', 'ucf101_02.json',
                                                     'ucf101_03.json']
    split1 = load(dst / 'ucf101_01.json')
    assert split1['labels'] == UCF_CLASSES
    assert split1['database'] == {
        'v_Zumba_g02_c01': {'subset': 'training',
                            'annotations': {'label': 'Zumba', 'segment': [1, 21]}},
        'v_ApplyLipstick_g02_c01': {'subset': 'training',
                                    'annotations': {'label': 'ApplyLipstick', 'segment': [1, 22]}},
        'v_Biking_g02_c01': {'subset': 'training',
                             'annotations': {'label': 'Biking', 'segment': [1, 1]}},
        'v_Zumba_g01_c01': {'subset': 'validation',
                            'annotations': {'label': 'Zumba', 'segment': [1, 11]}},
        'v_ApplyLipstick_g01_c01': {'subset': 'validation',
                                    'annotations': {'label': 'ApplyLipstick', 'segment': [1, 12]}},
        'v_Biking_g01_c01': {'subset': 'validation',
                             'annotations': {'label': 'Biking', 'segment': [1, 13]}},
    }
    split2 = load(dst / 'ucf101_02.json')['database']
    assert split2['v_Biking_g02_c01']['subset'] == 'validation'
    assert split2['v_Biking_g01_c01']['subset'] == 'training'
    # Split 3 tests group 3, which does not exist: everything is training.
    assert {v['subset'] for v in load(dst / 'ucf101_03.json')['database'].values()} == {'training'}
    err = capsys.readouterr().err
    assert err.count('warning: 1 of 6 videos have no frame folder') == 3


def test_ucf101_json_missing_class_ind_via_module(ucf, tmp_path):
    annotations, jpg = ucf
    (annotations / 'classInd.txt').unlink()
    result = run_module('ucf101_json', annotations, jpg, tmp_path / 'json')
    assert result.returncode == 1
    assert result.stderr == f'error: file not found: {annotations / "classInd.txt"}\n'


def test_ucf101_json_user_errors(ucf, tmp_path):
    annotations, jpg = ucf
    with pytest.raises(UserError, match='the destination is a directory'):
        ucf101_json.main([str(annotations), str(jpg), str(tmp_path / 'ucf101_01.json')])
    with pytest.raises(UserError, match=f'video directory not found: {tmp_path / "nope"}'):
        ucf101_json.main([str(annotations), str(tmp_path / 'nope'), str(tmp_path / 'json')])
    with (annotations / 'testlist02.txt').open('a') as f:
        f.write('Rowing/v_Rowing_g01_c01.avi\r\n')
    with pytest.raises(UserError, match=r"testlist02.txt line 4: class 'Rowing' is not in"):
        ucf101_json.main([str(annotations), str(jpg), str(tmp_path / 'json')])


def test_ucf101_json_writes_the_splits_whose_lists_are_there(ucf, tmp_path, capsys):
    annotations, jpg = ucf
    for split in (2, 3):
        (annotations / f'trainlist0{split}.txt').unlink()
        (annotations / f'testlist0{split}.txt').unlink()
    ucf101_json.main([str(annotations), str(jpg), str(tmp_path / 'json')])
    assert sorted(p.name for p in (tmp_path / 'json').iterdir()) == ['ucf101_01.json']
    assert load(tmp_path / 'json' / 'ucf101_01.json')['database']['v_Zumba_g01_c01'][
        'subset'] == 'validation'
    assert 'splits 1 written' in capsys.readouterr().out
    (annotations / 'testlist01.txt').unlink()  # half a split is a mistake, named
    with pytest.raises(UserError, match=r'testlist01.txt not found \(split 1 needs both'):
        ucf101_json.main([str(annotations), str(jpg), str(tmp_path / 'json2')])
    (annotations / 'trainlist01.txt').unlink()
    with pytest.raises(UserError, match='no split lists'):
        ucf101_json.main([str(annotations), str(jpg), str(tmp_path / 'json2')])


def make_video(path: Path, n_frames: int, rate: int = 25, codec=('-c:v', 'mpeg4')) -> None:
    """A tiny test-pattern video of `n_frames` frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([find_ffmpeg(), '-v', 'error', '-y', '-f', 'lavfi', '-i',
                    f'testsrc=size=64x48:rate={rate}', '-frames:v', str(n_frames), *codec,
                    '-pix_fmt', 'yuv420p', str(path)], check=True)


def test_ucf101_json_from_videos_counts_what_generate_video_jpgs_writes(ucf, tmp_path, capsys):
    from util_scripts import generate_video_jpgs
    annotations, _ = ucf
    videos = tmp_path / 'videos'
    for index, c in enumerate(UCF_CLASSES):
        make_video(videos / c / f'v_{c}_g01_c01.avi', 10 + index)
    make_video(videos / 'Zumba' / 'v_Zumba_g02_c01.avi', 7, codec=('-c:v', 'libx264', '-bf', '2'))
    generate_video_jpgs.main([str(videos), str(tmp_path / 'frames'), 'ucf101', '--size', '16'])
    (videos / 'Biking' / 'v_Biking_g02_c01.avi').write_bytes(b'RIFF but not a video')
    capsys.readouterr()
    ucf101_json.main([str(annotations), str(videos), str(tmp_path / 'json'), '--n_jobs', '2'])

    database = load(tmp_path / 'json' / 'ucf101_01.json')['database']
    for c in UCF_CLASSES:
        n_jpgs = len(list((tmp_path / 'frames' / c / f'v_{c}_g01_c01').glob('*.jpg')))
        assert database[f'v_{c}_g01_c01']['annotations']['segment'] == [1, n_jpgs + 1]
    assert [database[f'v_{c}_g01_c01']['annotations']['segment'][1] for c in UCF_CLASSES] == [
        11, 12, 13]
    assert database['v_Zumba_g02_c01']['annotations']['segment'] == [1, 8]
    assert database['v_Biking_g02_c01']['annotations']['segment'] == [1, 1]
    assert database['v_ApplyLipstick_g02_c01']['annotations']['segment'] == [1, 1]
    err = capsys.readouterr().err
    # Each video is decoded once for the three splits; the broken one is named in each.
    assert err.count('counting frames:   0%') == 1
    assert err.count(f'does not decode: {videos / "Biking" / "v_Biking_g02_c01.avi"}: '
                     'cannot open: ') == 3
    assert err.count('warning: 1 of 6 videos have no frame folder or video file') == 3


def test_video_counts_of_kinetics_mit_and_hmdb51_via_module(tmp_path):
    csv_dir, videos = tmp_path / 'csv', tmp_path / 'videos'
    csv_dir.mkdir()
    (csv_dir / 'kinetics-400_train.csv').write_text(
        'label,youtube_id,time_start,time_end,split\nzumba,aaa,10,20,train\n')
    (csv_dir / 'kinetics-400_val.csv').write_text(
        'label,youtube_id,time_start,time_end,split\nzumba,bbb,0,10,val\n')
    make_video(videos / 'zumba' / 'aaa_000010_000020.mp4', 6, codec=('-c:v', 'libx264'))
    make_video(videos / 'zumba' / 'bbb_000000_000010.webm', 4, codec=('-c:v', 'libvpx'))
    result = run_module('kinetics_json', csv_dir, 400, videos, 'video', tmp_path / 'k.json',
                        '--n_jobs', '2')
    assert result.returncode == 0, result.stderr
    database = load(tmp_path / 'k.json')['database']
    assert database['aaa_000010_000020']['annotations']['segment'] == [1, 7]
    assert database['bbb_000000_000010']['annotations']['segment'] == [1, 5]

    mit = tmp_path / 'mit'
    mit.mkdir()
    (mit / 'moments_categories.txt').write_text('zumba,0\n')
    (mit / 'trainingSet.csv').write_text('zumba/aaa_000010_000020.mp4,zumba,3,1\n')
    (mit / 'validationSet.csv').write_text('zumba/bbb_000000_000010.mp4,zumba,3,1\n')
    mit_json.main([str(mit), str(videos), str(tmp_path / 'mit.json'), '--n_jobs', '1'])
    database = load(tmp_path / 'mit.json')['database']
    assert database['aaa_000010_000020']['annotations']['segment'] == [1, 7]
    assert database['bbb_000000_000010']['annotations']['segment'] == [1, 5]

    hmdb = tmp_path / 'hmdb'
    hmdb.mkdir()
    for split in (1, 2, 3):
        (hmdb / f'zumba_test_split{split}.txt').write_text(
            'aaa_000010_000020.avi 1\nbbb_000000_000010.avi 2\n')
    hmdb51_json.main([str(hmdb), str(videos), str(tmp_path / 'hmdb')])
    database = load(tmp_path / 'hmdb' / 'hmdb51_1.json')['database']
    assert database['bbb_000000_000010'] == {
        'subset': 'validation', 'annotations': {'label': 'zumba', 'segment': [1, 5]}}


# HMDB-51 ----------------------------------------------------------------------------------------

def test_hmdb51_json(tmp_path):
    annotations, jpg = tmp_path / 'splits', tmp_path / 'jpg'
    annotations.mkdir()
    for label in ('ride_bike', 'brush_hair', 'cartwheel'):
        for split in (1, 2, 3):
            # Split s: video s is unused (0), the next one is for testing (2), the third trains (1).
            ids = {s: '1' for s in (1, 2, 3)}
            ids[split] = '0'
            ids[split % 3 + 1] = '2'
            lines = ''.join(f'{label}_v{s}.avi {ids[s]} \n' for s in (1, 2, 3))
            (annotations / f'{label}_test_split{split}.txt').write_text(lines)
        make_frames(jpg, label, f'{label}_v1', 5)
        make_frames(jpg, label, f'{label}_v2', 6)
    (annotations / 'README').write_text('not a split file')

    hmdb51_json.main([str(annotations), str(jpg), str(tmp_path / 'json')])

    split1 = load(tmp_path / 'json' / 'hmdb51_1.json')
    assert split1['labels'] == ['brush_hair', 'cartwheel', 'ride_bike']
    assert split1['database']['cartwheel_v2'] == {
        'subset': 'validation', 'annotations': {'label': 'cartwheel', 'segment': [1, 7]}}
    assert split1['database']['cartwheel_v3'] == {
        'subset': 'training', 'annotations': {'label': 'cartwheel', 'segment': [1, 1]}}
    assert 'cartwheel_v1' not in split1['database']
    assert len(split1['database']) == 6
    split3 = load(tmp_path / 'json' / 'hmdb51_3.json')['database']
    assert split3['ride_bike_v1'] == {
        'subset': 'validation', 'annotations': {'label': 'ride_bike', 'segment': [1, 6]}}


# Kinetics ---------------------------------------------------------------------------------------

def test_kinetics_json(tmp_path, capsys):
    csv_dir, jpg = tmp_path / 'csv', tmp_path / 'jpg'
    csv_dir.mkdir()
    (csv_dir / 'kinetics-400_train.csv').write_text(
        'label,youtube_id,time_start,time_end,split,is_cc\n'
        'zumba,aaa,10,20,train,0\n'
        '"passing American football (in game)",bbb,0,10,train,0\n'
        'zumba,ccc,5,15,train,0\n')
    (csv_dir / 'kinetics-400_val.csv').write_text(
        'label,youtube_id,time_start,time_end,split,is_cc\n'
        '"passing American football (in game)",ddd,100,110,val,0\n')
    (csv_dir / 'kinetics-400_test.csv').write_text(
        'youtube_id,time_start,time_end,split\neee,3,13,test\n')
    make_frames(jpg, 'zumba', 'aaa_000010_000020', 7)
    make_frames(jpg, 'passing American football (in game)', 'ddd_000100_000110', 8)
    make_frames(jpg, 'test', 'eee_000003_000013', 9)
    dst = tmp_path / 'kinetics.json'

    kinetics_json.main([str(csv_dir), '400', str(jpg), 'jpg', str(dst)])

    data = load(dst)
    assert data['labels'] == ['zumba', 'passing American football (in game)']
    assert data['database'] == {
        'aaa_000010_000020': {'subset': 'training',
                              'annotations': {'label': 'zumba', 'segment': [1, 8]}},
        'bbb_000000_000010': {'subset': 'training', 'annotations': {
            'label': 'passing American football (in game)', 'segment': [1, 1]}},
        'ccc_000005_000015': {'subset': 'training',
                              'annotations': {'label': 'zumba', 'segment': [1, 1]}},
        'ddd_000100_000110': {'subset': 'validation', 'annotations': {
            'label': 'passing American football (in game)', 'segment': [1, 9]}},
        'eee_000003_000013': {'subset': 'testing', 'annotations': {'segment': [1, 10]}},
    }
    assert 'warning: 2 of 5 videos have no frame folder' in capsys.readouterr().err

    (csv_dir / 'kinetics-400_val.csv').unlink()
    with pytest.raises(UserError, match='file not found: .*kinetics-400_val.csv'):
        kinetics_json.main([str(csv_dir), '400', str(jpg), 'jpg', str(dst)])


# Moments in Time --------------------------------------------------------------------------------

def test_mit_json(tmp_path):
    annotations, jpg = tmp_path / 'mit', tmp_path / 'jpg'
    annotations.mkdir()
    (annotations / 'moments_categories.txt').write_text('singing,0\nbiting,1\n')
    (annotations / 'trainingSet.csv').write_text(
        'singing/giphy-abc.mp4,singing,3,1\nbiting/yt-x.y.mp4,biting,3,1\n')
    (annotations / 'validationSet.csv').write_text('biting/flickr-1.mp4,biting,3,1\n')
    (annotations / 'testingSet.csv').write_text('yt-test.mp4\n')
    make_frames(jpg, 'singing', 'giphy-abc', 4)
    make_frames(jpg, 'biting', 'yt-x.y', 3)
    make_frames(jpg, 'test', 'yt-test', 2)

    mit_json.main([str(annotations), str(jpg), str(tmp_path / 'mit.json')])

    data = load(tmp_path / 'mit.json')
    assert data['labels'] == ['singing', 'biting']
    assert data['database'] == {
        'giphy-abc': {'subset': 'training', 'annotations': {'label': 'singing', 'segment': [1, 5]}},
        'yt-x.y': {'subset': 'training', 'annotations': {'label': 'biting', 'segment': [1, 4]}},
        'flickr-1': {'subset': 'validation',
                     'annotations': {'label': 'biting', 'segment': [1, 1]}},
        'yt-test': {'subset': 'testing', 'annotations': {'segment': [1, 3]}},
    }


# ActivityNet ------------------------------------------------------------------------------------

def test_add_fps_into_activitynet_json(tmp_path, capsys):
    videos = tmp_path / 'videos'
    videos.mkdir()
    for name, rate in (('v_abc', 25), ('v_def', 30), ('v_unlisted', 25)):
        subprocess.run([find_ffmpeg(), '-v', 'error', '-f', 'lavfi', '-i',
                        f'testsrc=size=64x48:rate={rate}', '-t', '0.2', '-pix_fmt', 'yuv420p',
                        str(videos / f'{name}.mp4')], check=True)
    src = tmp_path / 'activity_net.json'
    database = {'abc': {'subset': 'training', 'annotations': []},
                'def': {'subset': 'validation', 'annotations': []}}
    src.write_text(json.dumps({'taxonomy': [], 'database': database}))

    add_fps_into_activitynet_json.main([str(videos), str(src), str(tmp_path / 'out.json')])

    out = load(tmp_path / 'out.json')
    assert out['database']['abc'] == {'subset': 'training', 'annotations': [], 'fps': 25.0}
    assert out['database']['def']['fps'] == 30.0
    assert out['taxonomy'] == []
    assert 'fps of 2 videos; 1 videos not in activity_net.json left out; 0 unreadable' in (
        capsys.readouterr().out)
    assert 'fps' not in load(src)['database']['abc']

    (videos / 'v_def.mp4').write_text('broken')
    result = run_module('add_fps_into_activitynet_json', videos, src)
    assert result.returncode == 1
    assert f'failed: {videos / "v_def.mp4"}' in result.stderr
    assert result.stderr.splitlines()[-1] == (
        'error: 1 videos could not be read by ffmpeg (listed above)')
    assert load(src)['database']['abc']['fps'] == 25.0
