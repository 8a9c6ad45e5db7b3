"""The documentation's commands and names against the code (tests/docs_commands.py).

Running the commands for real is `python tests/docs_commands.py --run demo` (CI, after
`make demo`); here every command is parsed by its script's own parser, in seconds.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import docs_commands  # noqa: E402


@pytest.fixture(scope='module')
def docs():
    return docs_commands.read_docs()


def test_extracts_joined_commands_of_bash_blocks_only():
    text = ('intro\n'
            '```bash\n'
            'make demo   # a comment\n'
            '# a comment line\n'
            'python main.py --root_path ~/ \\\n'
            '  --no_train\n'
            '```\n'
            '```json\n'
            '{"python": 1}\n'
            '```\n'
            '1. step\n'
            '   ```bash\n'
            '   python -m util_scripts.plot_logs ~/results\n'
            '   ```\n')
    found = docs_commands.commands('x.md', text)
    assert [(c.line, c.text) for c in found] == [
        (3, 'make demo   # a comment'),
        (5, 'python main.py --root_path ~/   --no_train'),
        (13, 'python -m util_scripts.plot_logs ~/results')]


def test_every_doc_command_parses_with_its_script(docs, tmp_path):
    cmds = docs_commands.all_commands(docs)
    assert len(cmds) > 40, 'the docs lost their commands, or the extraction broke'
    problems = docs_commands.check_parsing(cmds, docs_commands.parse_home(tmp_path))
    assert not problems, '\n'.join(f'{c.where()}: {p}' for c, p in problems.items())


def test_prose_names_only_existing_options_scripts_and_links(docs):
    problems = docs_commands.check_prose(docs)
    assert not problems, '\n'.join(problems)


def test_readme_holds_the_seed_commands(docs):
    readme = ' '.join(c.text for c in docs_commands.commands('README.md', docs['README.md']))
    for command in ('python -m util_scripts.generate_video_jpgs',
                    'python -m util_scripts.ucf101_json', 'python main.py',
                    '--n_pretrain_classes 1039', '--lr_scheduler multistep',
                    '--inference --inference_batch_size 1', 'python -m util_scripts.eval_accuracy',
                    '--subset validation --k 1 --ignore --save', 'make demo', 'make test',
                    'PADDLE=paddlepaddle-gpu'):
        assert command in readme


BROKEN = [  # (a command naming what does not exist, what the checker says)
    ('python main.py --root_path ~/ --no_such_option 1', 'unrecognized arguments'),
    ('python main.py --n_epoch 3', "['--n_epoch']"),  # argparse takes the abbreviation
    ('python main.py --model resnet --model_depth', 'expected one argument'),
    ('python -m util_scripts.no_such_script x', 'No module named'),
    ('python -m util_scripts.eval_accuracy a.json b.json --top 5', 'unrecognized arguments'),
    ('python -m paddle.distributed.launch --nproc_per_nodes 2 main.py --distributed',
     "['--nproc_per_nodes']"),
    ('python -m paddle.distributed.launch --nproc_per_node 2 main.py --no_such_option',
     'unrecognized arguments'),
    ('python -m util_scripts.export_model --opts ~/results/opts.json --weights w.pdparams '
     '--output out --model_dept 50', "['--model_dept']"),
    ('python -m pytest tests/test_nothing.py', 'no such tests'),
    ('make no_such_target', 'make -n failed'),
    ('bash .ci/no_such_script', 'no such file'),
    ('ls -l', 'the checker knows python, make, bash and printf commands only'),
]


def test_a_command_naming_what_does_not_exist_fails(tmp_path):
    cmds = [docs_commands.Command('x.md', line, text) for line, (text, _) in enumerate(BROKEN)]
    problems = docs_commands.check_parsing(cmds, docs_commands.parse_home(tmp_path))
    for command, (_, complaint) in zip(cmds, BROKEN):
        assert complaint in problems.get(command, 'no complaint'), command.text


def test_prose_naming_what_does_not_exist_fails():
    problems = docs_commands.check_prose({'README.md': (
        'Use `--no_such_option`, `util_scripts.no_such_script`, `tests/test_nothing.py`, '
        '[a page](docs/no_such_page.md) and [a heading](docs/data.md#no-such-heading).')})
    assert problems == [
        'README.md: --no_such_option is no option of any script',
        'README.md: util_scripts.no_such_script does not exist',
        'README.md: tests/test_nothing.py does not exist',
        'README.md: link to docs/no_such_page.md, which does not exist',
        'README.md: link docs/data.md#no-such-heading: no such heading in docs/data.md']


def test_subset_keeps_the_first_videos_of_each_class(tmp_path):
    demo = tmp_path / 'demo'
    (demo / 'annotations').mkdir(parents=True)
    (demo / 'annotations/classInd.txt').write_text('1 A\n2 B\n')
    names = {'train': [f'{c}/v_{c}_g{g:02d}_c01.avi' for c in 'AB' for g in range(6)],
             'test': [f'{c}/v_{c}_g{g:02d}_c01.avi' for c in 'AB' for g in range(10, 13)]}
    (demo / 'annotations/trainlist01.txt').write_text(''.join(f'{n} 1\n' for n in names['train']))
    (demo / 'annotations/testlist01.txt').write_text(''.join(f'{n}\n' for n in names['test']))
    docs_commands.build_subset(demo, tmp_path / 'videos', tmp_path / 'annotations')
    train = [line.split()[0] for line in (tmp_path / 'annotations/trainlist03.txt').open()]
    test = (tmp_path / 'annotations/testlist01.txt').read_text().split()
    assert train == [n for n in names['train'] if int(n.split('_g')[1][:2]) < 4]
    assert test == [n for n in names['test'] if int(n.split('_g')[1][:2]) < 12]
    assert sorted(f'B/{p.name}' for p in (tmp_path / 'videos/B').iterdir()) == sorted(
        n for n in train + test if n.startswith('B/'))


@pytest.mark.parametrize('text, reason', [
    ('python -m paddle.distributed.launch --nproc_per_node 8 main.py --distributed', '8 GPUs'),
    ('python -m util_scripts.kinetics_json ~/data/kinetics_csv 700 ~/data/kinetics_jpg jpg k.json',
     'no stand-in'),
    ('make demo', 'dry-run'),
])
def test_run_mode_says_why_a_command_is_only_parsed(tmp_path, text, reason):
    command = docs_commands.Command('x.md', 1, text)
    assert reason in docs_commands.parse_only_reason(command, tmp_path)
