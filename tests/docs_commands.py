"""Check the shell commands of the documentation against the code.

    python tests/docs_commands.py            parse every command with its script's own parser
    python tests/docs_commands.py --run DEMO  run them for real on the demo data (`make demo`)

The commands are the lines of the ```bash blocks of README.md, CONTRIBUTING.md and docs/*.md
(a trailing backslash continues a line). Parsing runs each script up to its `parse_args` and
stops it there: the script must exist, its arguments must parse, and every option must be
spelled in full (argparse would take an abbreviation). `--run` executes each command's text with
bash from a sandbox folder that is also `~`, where the demo's files stand in for the paths the
docs name (STAND_INS), with main.py's model, clips and classes cut to the demo's (DEMO_FLAGS);
commands that need what the demo cannot stand in for are only parsed (PARSE_ONLY). The prose is
checked too: every `--option` it names is an option of some script, every `util_scripts.NAME`
and `tests/NAME.py` exists, every local link and its #anchor resolves.
"""
import argparse
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional

REPO = Path(__file__).resolve().parent.parent
DOCS = ['README.md', 'docs/data.md', 'docs/training.md', 'docs/distributed.md',
        'docs/merged-datasets.md', 'docs/deployment.md', 'docs/scripts.md', 'docs/performance.md',
        'docs/reference-differences.md', 'CONTRIBUTING.md']  # the order --run executes them in

# Paths the docs name (relative to `~`, which is also the working folder of --run) and what
# stands in for them: a file or folder of the demo (DEMO/...), or a file the checker builds.
STAND_INS = {
    'data/UCF-101': 'SUBSET/videos',  # <class>/<video>.avi, the videos of SUBSET's split files
    'data/ucfTrainTestlist': 'SUBSET/annotations',  # classInd.txt, trainlist0{1,2,3}.txt, ...
    'clip.mp4': 'DEMO/videos/DriftUp/v_DriftUp_g04_c02.avi',
    'frames': 'DEMO/jpg/DriftDown/v_DriftDown_g01_c01',
    'demo/videos': 'DEMO/videos',
    'demo/annotations': 'DEMO/annotations',
    'demo/jpg': 'DEMO/jpg',
    'demo/json': 'DEMO/json',
    'data/pretrain.pdparams': 'built: random weights of the DEMO_FLAGS model, 1039 classes',
    'data/r3d50_KM_200ep.pth': 'built: a reference-layout ResNet-10 checkpoint, 1039 classes',
}
STAND_IN_PTH = 'data/r3d50_KM_200ep.pth'
# SUBSET: the demo's split 1 cut to this many (training, test) videos per class (a tenth of the
# training time); splits 2 and 3 are copies of it.
SUBSET_PER_CLASS = (4, 2)
# Appended to main.py's and export_model's commands under --run (the last value wins): the
# demo's model, clip size and classes instead of ResNet-50 on 16 x 112 x 112 clips of 101.
DEMO_FLAGS = ['--model_depth', '10', '--resnet_widen_factor', '0.5', '--sample_size', '48',
              '--sample_duration', '8', '--n_classes', '4']
# Under --run these are parsed, not run: (pattern of the command's text, why).
PARSE_ONLY = [
    (r'--nproc_per_node 8', 'needs 8 GPUs'),
    (r'--nnodes 2', 'needs two machines'),
    (r'data/(ActivityNet|hmdb51|kinetics|mit)', 'a data set the demo has no stand-in for'),
    (r'util_scripts\.benchmark_annotation', 'writes 700,000 folders'),
    (r'util_scripts\.benchmark(_jobs)? ', 'minutes of timing'),
    (r'tests/docs_commands\.py', 'this checker itself'),
]
PARSE_ONLY_FILES = {'docs/merged-datasets.md': 'Kinetics-700 and Moments in Time are not in the '
                                               'demo'}
# Options the prose names that belong to tools outside this project.
EXTERNAL_OPTIONS = {'--logdir': 'visualdl'}
# For --run: what the parse check needs of the files it reads before parsing ends.
PARSE_STUBS = {'results/opts.json': '{"model": "resnet"}'}
PADDLE_LAUNCH = 'paddle.distributed.launch'


class Command(NamedTuple):
    """One shell command of a doc: where it is and its text (continuations joined)."""
    doc: str
    line: int
    text: str

    def where(self) -> str:
        return f'{self.doc}:{self.line}'


class Target(NamedTuple):
    """A Python entry point and the arguments a command gives it."""
    kind: str  # 'module' (python -m) or 'path' (python FILE)
    name: str
    argv: List[str]
    stop_at: str = 'parse_args'  # the call after which parsing is done


def code_blocks(text: str) -> Iterator[tuple]:
    """(language, line number of the first line, lines) of each fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r'^(\s*)```(\w*)\s*$', lines[i])
        if not fence:
            i += 1
            continue
        indent, lang, start = len(fence.group(1)), fence.group(2), i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != '```':
            i += 1
        yield lang, start + 1, [line[indent:] for line in lines[start:i]]
        i += 1


def commands(doc: str, text: str) -> List[Command]:
    """The commands of the bash blocks of one doc."""
    found = []
    for lang, first, lines in code_blocks(text):
        if lang not in ('bash', 'sh', 'shell'):
            continue
        pending, start = '', None
        for number, line in enumerate(lines, first):
            if not pending and (not line.strip() or line.lstrip().startswith('#')):
                continue
            start = number if not pending else start
            if line.endswith('\\'):
                pending += line[:-1]
                continue
            found.append(Command(doc, start, (pending + line).strip()))
            pending = ''
        if pending:
            found.append(Command(doc, start, pending.strip()))
    return found


def targets(words: List[str], home: str) -> List[Target]:
    """The Python entry points of one command's words; [] for make, bash, printf (a small
    input file written in place), pip and pytest."""
    words = [home + w[1:] if w.startswith('~/') else w for w in words]
    while words and re.match(r'^[A-Z_]+=', words[0]):
        words = words[1:]
    program, args = Path(words[0]).name, words[1:]
    if program in ('make', 'bash', 'printf'):
        return []
    if program != 'python':
        raise ValueError(f'{words[0]}: the checker knows python, make, bash and printf commands '
                         'only')
    if args[:2] in (['-m', 'pip'], ['-m', 'pytest']):
        return []
    if args[0] == '-m' and args[1] == PADDLE_LAUNCH:
        script = next((i for i, w in enumerate(args) if w.endswith('.py')), None)
        if script is None:
            raise ValueError(f'{PADDLE_LAUNCH} without a training script')
        return [Target('module', PADDLE_LAUNCH, args[2:script + 1], 'parse_known_args'),
                Target('path', args[script], args[script + 1:])]
    if args[0] == '-m':
        return [Target('module', args[1], args[2:])]
    return [Target('path', args[0], args[1:])]


def check_other(command: Command) -> Optional[str]:
    """The check of a make, bash or pip command; None when fine."""
    words = shlex.split(command.text, comments=True)
    while re.match(r'^[A-Z_]+=', words[0]):
        words = words[1:]
    if words[0] == 'make':
        done = subprocess.run(['make', '-n', *words[1:]], cwd=REPO, capture_output=True, text=True)
        return None if done.returncode == 0 else f'make -n failed: {done.stderr.strip()}'
    if words[0] == 'bash':
        script = REPO / words[1]
        if not script.is_file():
            return f'{words[1]}: no such file'
        done = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True)
        return None if done.returncode == 0 else f'bash -n: {done.stderr.strip()}'
    if words[1:3] == ['-m', 'pytest']:
        missing = [w for w in words[3:] if w.startswith('tests') and not (REPO / w).exists()]
        return f'no such tests: {missing}' if missing else None
    return None  # pip install: downloads, not run


# ---- parsing, in one worker process for all commands ----

class _Parsed(BaseException):
    """Raised in a script right after its options are parsed."""


def _parse_one(target: Target) -> dict:
    """Run `target` until its options are parsed; its parsers' options and any error."""
    parsers = []
    original_known, original_args = (argparse.ArgumentParser.parse_known_args,
                                     argparse.ArgumentParser.parse_args)

    def parse_known_args(self, args=None, namespace=None):
        parsers.append(self)
        result = original_known(self, args, namespace)
        if target.stop_at == 'parse_known_args':
            raise _Parsed
        return result

    def parse_args(self, args=None, namespace=None):
        parsers.append(self)
        original_args(self, args, namespace)
        raise _Parsed

    argparse.ArgumentParser.parse_known_args = parse_known_args
    argparse.ArgumentParser.parse_args = parse_args
    sys.argv = [target.name, *target.argv]
    error, output = None, io.StringIO()
    try:
        with redirect_stdout(output), redirect_stderr(output):
            if target.kind == 'module':
                runpy.run_module(target.name, run_name='__main__', alter_sys=True)
            else:
                runpy.run_path(str(REPO / target.name), run_name='__main__')
        error = 'the script ended without parsing its options'
    except _Parsed:
        pass
    except SystemExit as e:
        error = output.getvalue().strip().splitlines()[-1:] or [f'exit status {e.code}']
        error = error[0]
    except Exception as e:  # the script's own failure before its options were parsed
        error = f'{type(e).__name__}: {e}'
    finally:
        argparse.ArgumentParser.parse_known_args = original_known
        argparse.ArgumentParser.parse_args = original_args
    options = sorted({o for p in parsers for o in p._option_string_actions})
    return {'error': error, 'options': options}


def _worker(request: Path, reply: Path) -> None:
    """The worker process of `parse_all`: the targets in `request`, the results to `reply`."""
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    items = json.loads(request.read_text())
    reply.write_text(json.dumps([_parse_one(Target(*item)) for item in items]))


def parse_all(items: List[Target]) -> List[dict]:
    """`_parse_one` of every target, in one fresh process (scripts change their process)."""
    with tempfile.TemporaryDirectory() as tmp:
        request, reply = Path(tmp) / 'request.json', Path(tmp) / 'reply.json'
        request.write_text(json.dumps([list(t) for t in items]))
        done = subprocess.run([sys.executable, __file__, '--parse_worker', str(request),
                               str(reply)], cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f'parse worker failed:\n{done.stderr}')
        return json.loads(reply.read_text())


def misspelled(target: Target, options: List[str]) -> List[str]:
    """The options of `target.argv` that are not spelled as one of its parsers' options."""
    words = target.argv[:target.argv.index('--')] if '--' in target.argv else target.argv
    return [w for w in words if re.match(r'^--?[A-Za-z]', w) and w.split('=')[0] not in options]


def check_parsing(cmds: List[Command], home: str) -> Dict[Command, str]:
    """{command: what is wrong} for every command whose script or options do not exist."""
    problems, items, owners = {}, [], []
    for command in cmds:
        try:
            found = targets(shlex.split(command.text, comments=True), home)
        except ValueError as e:
            problems[command] = str(e)
            continue
        if not found:
            problem = check_other(command)
            if problem:
                problems[command] = problem
        items += found
        owners += [command] * len(found)
    for command, target, result in zip(owners, items, parse_all(items)):
        wrong = misspelled(target, result['options'])
        if result['error'] or wrong:
            problems[command] = (f'{target.name}: {result["error"] or ""}'
                                 + (f' options not spelled as the script has them: {wrong}'
                                    if wrong else ''))
    return problems


# ---- the prose ----

def all_options() -> set:
    """Every option of main.py, of every util_scripts module, of launch and of this checker."""
    items = [Target('path', 'main.py', []), Target('path', 'tests/docs_commands.py', []),
             Target('module', PADDLE_LAUNCH, [])]
    items += [Target('module', f'util_scripts.{p.stem}', [])
              for p in sorted((REPO / 'util_scripts').glob('*.py'))
              if p.stem not in ('__init__', 'utils')]
    items = [Target(t.kind, t.name, ['--help'], 'parse_known_args') for t in items]
    return {o for result in parse_all(items) for o in result['options']} | set(EXTERNAL_OPTIONS)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower().replace('`', ''))
    return text.replace(' ', '-')


def check_prose(docs: Dict[str, str]) -> List[str]:
    """What the docs name that does not exist: options, scripts, test files, links, anchors."""
    problems, options = [], all_options()
    for doc, text in docs.items():
        for option in sorted(set(re.findall(r'(?<![\w-])--[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*',
                                            text))):
            if option not in options:
                problems.append(f'{doc}: {option} is no option of any script')
        for name in sorted(set(re.findall(r'util_scripts[./]([a-z0-9_]+)', text))):
            module = REPO / 'util_scripts' / name
            if not (module.with_suffix('.py').is_file() or (module / '__init__.py').is_file()
                    or name == 'NAME'):
                problems.append(f'{doc}: util_scripts.{name} does not exist')
        for name in sorted(set(re.findall(r'tests/([\w]+\.py)', text))):
            if not (REPO / 'tests' / name).is_file() and name != 'NAME.py':
                problems.append(f'{doc}: tests/{name} does not exist')
        for link in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'^[a-z]+://', link):
                continue
            page, _, anchor = link.partition('#')
            path = (REPO / doc).parent / page if page else REPO / doc
            page_name = os.path.relpath(path, REPO)
            if not path.exists():
                problems.append(f'{doc}: link to {page_name}, which does not exist')
                continue
            if anchor and path.suffix == '.md':
                headings = re.findall(r'^#+ (.+)$', path.read_text(), re.M)
                if anchor not in {slug(h) for h in headings}:
                    problems.append(f'{doc}: link {link}: no such heading in {page_name}')
    return problems


def read_docs() -> Dict[str, str]:
    """{doc: its text} of the DOCS that exist."""
    return {doc: (REPO / doc).read_text() for doc in DOCS if (REPO / doc).is_file()}


def all_commands(docs: Dict[str, str]) -> List[Command]:
    """The commands of every doc, in DOCS order."""
    return [c for doc, text in docs.items() for c in commands(doc, text)]


def parse_home(tmp: Path) -> str:
    """A stand-in `~` with the files the scripts read before their parsing ends."""
    for name, content in PARSE_STUBS.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(content)
    return str(tmp)


# ---- --run ----

def build_sandbox(sandbox: Path, demo: Path) -> None:
    """The repository's entry points, the stand-ins and `python` on PATH, under `sandbox`."""
    for entry in REPO.iterdir():
        if entry.name not in ('.git', 'demo', 'results', 'docs', 'tests'):
            (sandbox / entry.name).symlink_to(entry)
    for name, source in STAND_INS.items():
        if source.startswith('DEMO/'):
            (sandbox / name).parent.mkdir(parents=True, exist_ok=True)
            (sandbox / name).symlink_to(demo.resolve() / source[len('DEMO/'):])
    build_subset(demo.resolve(), sandbox / 'data/UCF-101', sandbox / 'data/ucfTrainTestlist')
    (sandbox / 'bin').mkdir()
    python = sandbox / 'bin' / 'python'  # a script, not a link: a venv's python finds its venv
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')  # by its path
    python.chmod(0o755)
    build = ('import sys; sys.path.insert(0, {repo!r}); import environment; environment.setup()\n'
             'import paddle, opts; from model import generate_model\n'
             'opt = opts.get_parser().parse_args({flags!r} + ["--n_classes", "1039"])\n'
             'opts.resolve_model_input(opt)\n'
             'paddle.save(generate_model(opt).state_dict(), {dst!r})\n')
    subprocess.run([sys.executable, '-c', build.format(
        repo=str(REPO), flags=DEMO_FLAGS, dst=str(sandbox / 'data/pretrain.pdparams'))],
        check=True)
    reference = ('import sys, torch; sys.path.insert(0, {tests!r}); import torch_reference\n'
                 'model = torch_reference.build("resnet", 10, n_classes=1039)\n'
                 'state = {{"module." + k: v for k, v in model.state_dict().items()}}\n'
                 'torch.save({{"arch": "resnet-10", "state_dict": state}}, {dst!r})\n')
    subprocess.run([sys.executable, '-c', reference.format(
        tests=str(REPO / 'tests'), dst=str(sandbox / STAND_IN_PTH))], check=False)


def bfloat16_cpu() -> bool:
    """Whether this CPU has bfloat16 instructions (what `--amp bfloat16` needs)."""
    cpuinfo = Path('/proc/cpuinfo')
    text = cpuinfo.read_text(errors='ignore') if cpuinfo.exists() else ''
    return 'avx512_bf16' in text or 'amx_bf16' in text


def build_subset(demo: Path, videos: Path, annotations: Path) -> None:
    """SUBSET: split files with SUBSET_PER_CLASS videos per class, and links to those videos."""
    annotations.mkdir(parents=True)
    shutil.copy(demo / 'annotations/classInd.txt', annotations)
    for kind, keep in zip(('train', 'test'), SUBSET_PER_CLASS):
        lines, per_class = [], {}
        for line in (demo / f'annotations/{kind}list01.txt').read_text().splitlines():
            video = line.split()[0]
            label = video.split('/')[0]
            per_class[label] = per_class.get(label, 0) + 1
            if per_class[label] <= keep:
                lines.append(line)
                (videos / video).parent.mkdir(parents=True, exist_ok=True)
                (videos / video).symlink_to(demo / 'videos' / video)
        for split in (1, 2, 3):
            (annotations / f'{kind}list0{split}.txt').write_text('\n'.join(lines) + '\n')


def parse_only_reason(command: Command, sandbox: Path) -> Optional[str]:
    """Why `command` is only parsed under --run; None when it runs."""
    if command.doc in PARSE_ONLY_FILES:
        return PARSE_ONLY_FILES[command.doc]
    for pattern, reason in PARSE_ONLY:
        if re.search(pattern, command.text):
            return reason
    if not targets(shlex.split(command.text, comments=True), str(sandbox)):
        return 'make, bash, pip and pytest: dry-run (make -n, bash -n) or not run; CI runs them'
    if '--amp bfloat16' in command.text and not bfloat16_cpu():
        return 'this CPU has no bfloat16 instructions'
    if '.pth' in command.text and not (sandbox / STAND_IN_PTH).exists():
        return 'PyTorch is not installed: no stand-in .pth'
    return None


def run_all(cmds: List[Command], demo: Path, sandbox: Path) -> Dict[Command, str]:
    """Run every command that the stand-ins allow, in order; {command: what went wrong}."""
    build_sandbox(sandbox, demo)
    env = dict(os.environ, HOME=str(sandbox), PATH=f'{sandbox / "bin"}:{os.environ["PATH"]}')
    problems, parsed = {}, []
    for command in cmds:
        words = shlex.split(command.text, comments=True)
        reason = parse_only_reason(command, sandbox)
        if reason:
            print(f'parse only  {command.where()}: {reason}', flush=True)
            parsed.append(command)
            continue
        text = command.text
        if any(t.name in ('main.py', 'util_scripts.export_model')
               for t in targets(words, str(sandbox))):
            text += ' ' + ' '.join(DEMO_FLAGS)
        start = time.time()
        done = subprocess.run(['bash', '-c', text], cwd=sandbox, env=env, capture_output=True,
                              text=True, timeout=600)
        print(f'{time.time() - start:6.1f} s    {command.where()}: {command.text[:70]}',
              flush=True)
        if done.returncode != 0:
            problems[command] = (f'exit status {done.returncode}:\n'
                                 + '\n'.join((done.stdout + done.stderr).splitlines()[-15:]))
    problems.update(check_parsing(parsed, str(sandbox)))
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python tests/docs_commands.py',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--run', type=Path, metavar='DEMO',
                        help='run the commands on the demo data in DEMO (made by make demo)')
    parser.add_argument('--sandbox', type=Path,
                        help='folder to run in (default: a temporary one, removed afterwards)')
    parser.add_argument('--parse_worker', nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parse_worker:
        _worker(*args.parse_worker)
        return 0
    if args.run and not (args.run / 'videos').is_dir():
        parser.error(f'--run {args.run}: no demo data there (make demo writes it to ./demo)')
    docs = read_docs()
    cmds = all_commands(docs)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            sandbox = args.sandbox or Path(tmp) / 'home'
            sandbox.mkdir(parents=True, exist_ok=True)
            problems = run_all(cmds, args.run, sandbox)
        else:
            problems = check_parsing(cmds, parse_home(Path(tmp)))
    lines = [f'{c.where()}: {c.text[:80]}\n    {p}' for c, p in problems.items()]
    lines += check_prose(docs)
    print('\n'.join(lines) or f'{len(cmds)} commands of {len(docs)} docs: all fine '
                              f'({time.time() - start:.0f} s)')
    return 1 if lines else 0


if __name__ == '__main__':
    sys.exit(main())
