"""tools/quantize.py end to end on a tiny ImageNet-layout folder at 224x224
with a random VGG-11 in the mmcls checkpoint format, and its bad inputs."""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
from imagenet_fixture import (imagenet_cfg_options, label_val_by_model,
                              make_imagenet_folder, save_random_model,
                              save_random_vgg11)
from inprocess import quantize_tool
from report_checks import assert_guard_followed_its_rule

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'lapq', 'vgg11_w4a4.py')
# Subprocess runs of the tool: the slow suite (CI runs it).
pytestmark = pytest.mark.slow

FAST = ['quantizer.init.p_grid=[2.0,3.0,4.0]', 'quantizer.search.maxiter=1',
        'quantizer.rounding.adaround.iters=5']


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('imagenet'))
    make_imagenet_folder(root)
    ckpt = save_random_vgg11(osp.join(root, 'vgg11_random.pth'))
    label_val_by_model(root, ckpt, CONFIG)
    return root, ckpt


def quantize(*args, cwd=REPO):
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools',
                                                    'quantize.py'), *args],
                          cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, proc.stdout, proc.stderr


def test_end_to_end_report_and_reload(imagenet, tmp_path):
    root, ckpt = imagenet
    work_dir = str(tmp_path / 'run')
    # GPTQ on the layers of at most 1152 input columns (the first three
    # convs), nearest rounding on the others: GPTQ and its fallback both
    # run, in a third of the time of GPTQ on every layer.
    rc, out, err = quantize(
        CONFIG, '--checkpoint', ckpt, '--work-dir', work_dir,
        '--calib-images', '4', '--max-evals', '8', '--cfg-options',
        *imagenet_cfg_options(root), *FAST,
        'quantizer.rounding.gptq.max_columns=1152')
    assert rc == 0, err[-3000:]
    assert '| LAPQ (powell + gptq) |' in out  # the summary table is printed
    log = open(glob.glob(osp.join(work_dir, '*', '*.log'))[0]).read()
    assert 'backbone.features.5.conv has 2304 input columns, more than ' \
        'gptq.max_columns=1152: nearest rounding' in log
    report = json.load(open(osp.join(work_dir, 'lapq_report.json')))
    for key in ('fp32.top1', 'fp32.top5', 'quantized.top1', 'quantized.top5',
                'init.method', 'init.p', 'init.calib_loss', 'lapq.calib_loss',
                'lapq.func_evals', 'lapq.seconds', 'settings', 'layers',
                'env.torch', 'env.mmcls', 'env.mmengine', 'env.mmlapq',
                'env.device'):
        node = report
        for part in key.split('.'):
            assert part in node, key
            node = node[part]
        assert node is not None, key
    assert report['fp32']['top1'] == 100.0  # val labels are its predictions
    assert report['lapq']['func_evals'] == 8
    assert_guard_followed_its_rule(report['lapq'])
    assert 2.0 <= report['init']['p'] <= 4.0
    assert report['env']['tf32'] == {'cuda_matmul': False, 'cudnn': False}
    assert report['settings']['quant']['w_bits'] == 4
    assert report['calibration']['num_images'] == 4
    layers = report['layers']
    assert len(layers) == 11  # 8 convs + 3 linears of VGG-11
    assert layers[0]['w_bits'] == 8 and layers[1]['w_bits'] == 4
    assert all(row['w_clip'] > 0 and row['a_clip'] > 0 for row in layers)
    assert osp.isfile(osp.join(work_dir, 'lapq_report.md'))
    for plot in ('p_sweep.png', 'search_loss.png', 'clips.png'):
        assert osp.getsize(osp.join(work_dir, 'plots', plot)) > 1000

    # The saved quantized checkpoint reloads and gives the same top-1.
    qckpt = osp.join(work_dir, 'lapq_quantized.pth')
    saved = torch.load(qckpt, weights_only=True)  # plain types only
    assert set(saved['meta']['lapq']['clips']) and 'state_dict' in saved
    rc, out, err = quantize(CONFIG, '--eval-quantized', qckpt, '--work-dir',
                            str(tmp_path / 'reload'), '--cfg-options',
                            *imagenet_cfg_options(root))
    assert rc == 0, err[-3000:]
    line = [ln for ln in out.splitlines() if ln.startswith('quantized model')]
    metrics = eval(line[0].split(':', 1)[1])  # the metrics dict it printed
    assert metrics['accuracy/top1'] == report['quantized']['top1']
    assert metrics['accuracy/top5'] == report['quantized']['top5']


def test_resnet_end_to_end(imagenet, tmp_path):
    """The ResNet-18 config on the ImageNet layout: BN folded, the chain
    cache over its blocks, the rounding, search, report. (MobileNetV2's
    layers and chain are checked on its trained Fashion-MNIST model,
    test_fmnist_models.py.)"""
    # layers: the convs and the FC, then what the integer target adds: the
    # pool's input, and per adding residual block its input, its branch's
    # end and its downsample's end (8 blocks, 3 downsamples).
    name, steps, layers = 'resnet18_w4a4', 14, 21 + 1 + 8 * 2 + 3
    root, _ = imagenet
    config = osp.join(REPO, 'configs', 'lapq', f'{name}.py')
    ckpt = save_random_model(config, str(tmp_path / f'{name}.pth'))
    work_dir = str(tmp_path / 'run')
    rc, out, err = quantize(
        config, '--checkpoint', ckpt, '--work-dir', work_dir,
        '--calib-images', '4', '--max-evals', '6', '--cfg-options',
        *imagenet_cfg_options(root), *FAST)
    assert rc == 0, err[-3000:]
    report = json.load(open(osp.join(work_dir, 'lapq_report.json')))
    assert len(report['layers']) == layers
    assert report['lapq']['func_evals'] == 6
    log = open(glob.glob(osp.join(work_dir, '*', '*.log'))[0]).read()
    assert f'chain of {steps} steps' in log


@pytest.fixture
def quantize_here(capsys):
    """The tool's ``main`` in this process (its imports paid once, not per
    bad input): a function of its arguments giving the exit status and
    what it printed, through pytest's capture as test_zoo reads it. An
    exception the tool does not turn into its one line fails the test with
    its traceback."""
    tool = quantize_tool()

    def run(*args):
        capsys.readouterr()  # what earlier calls printed
        status = tool.main(list(args))
        out, err = capsys.readouterr()
        return status, out, err
    return run


def assert_clean_failure(result, match, work_dir):
    rc, out, err = result
    lines = [ln for ln in err.strip().splitlines() if ln.startswith('error:')]
    assert rc == 1, err[-2000:]
    assert len(lines) == 1 and match in lines[0], err[-2000:]
    assert 'Traceback' not in err
    assert not osp.exists(work_dir), os.listdir(work_dir)


def test_bad_inputs_fail_with_one_line(imagenet, tmp_path, quantize_here):
    root, ckpt = imagenet
    wd = str(tmp_path / 'wd')
    opts = ['--work-dir', wd, '--cfg-options', *imagenet_cfg_options(root)]
    # A process of its own: its exit status and stderr, no traceback.
    assert_clean_failure(quantize('configs/lapq/nope.py', *opts),
                         'config configs/lapq/nope.py does not exist', wd)
    # The others in this process.
    assert_clean_failure(
        quantize_here(CONFIG, '--checkpoint', '/no/such.pth', *opts),
        'checkpoint /no/such.pth does not exist', wd)
    # An unreachable load_from URL (loopback, refused at once: no network).
    assert_clean_failure(
        quantize_here(CONFIG, *opts, 'load_from=http://127.0.0.1:9/vgg11.pth'),
        'cannot download checkpoint http://127.0.0.1:9/vgg11.pth', wd)
    assert_clean_failure(
        quantize_here(CONFIG, '--checkpoint', ckpt, *opts,
                      'quantizer.w_bits=1'),
        'w_bits=1 is not supported', wd)
    assert_clean_failure(
        quantize_here(CONFIG, '--checkpoint', ckpt, *opts,
                      'quantizer.exclude=[backbone.nothing.*]'),
        "layer pattern 'backbone.nothing.*' matches no", wd)


def test_bad_checkpoints_and_data_fail_with_one_line(imagenet, tmp_path,
                                                     quantize_here):
    root, ckpt = imagenet
    wd = str(tmp_path / 'wd')
    opts = ['--work-dir', wd, '--cfg-options', *imagenet_cfg_options(root)]
    state = torch.load(ckpt)['state_dict']
    partial = str(tmp_path / 'partial.pth')
    torch.save({'state_dict': {k: v for k, v in state.items()
                               if 'classifier.6' not in k}}, partial)
    assert_clean_failure(quantize_here(CONFIG, '--checkpoint', partial, *opts),
                         'does not fit the model: 2 missing keys', wd)
    nan = str(tmp_path / 'nan.pth')
    state['backbone.classifier.6.bias'] = torch.full((1000, ), float('nan'))
    torch.save({'state_dict': state}, nan)
    del state
    assert_clean_failure(
        quantize_here(CONFIG, '--checkpoint', nan, '--calib-images', '4',
                      *opts, *FAST), 'calibration loss is nan', wd)
    assert_clean_failure(
        quantize_here(CONFIG, '--checkpoint', ckpt, '--calib-images', '13',
                      *opts, *FAST),
        '13 calibration images were asked for but the calibration dataset '
        'holds 12', wd)
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    assert_clean_failure(
        quantize_here(CONFIG, '--checkpoint', ckpt, '--work-dir', wd,
                      '--cfg-options', *imagenet_cfg_options(empty)),
        'check data_root', wd)


def test_bad_data_and_settings_fail_with_one_line(imagenet, tmp_path,
                                                  quantize_here):
    root, ckpt = imagenet
    wd = str(tmp_path / 'wd')

    def run(data_root, *extra):
        return quantize_here(CONFIG, '--checkpoint', ckpt, '--work-dir', wd,
                             '--calib-images', '12', '--cfg-options',
                             *imagenet_cfg_options(data_root), *FAST, *extra)

    def copy_of_data(name):
        copy = str(tmp_path / name)
        shutil.copytree(root, copy)
        return copy

    # A truncated image (the calibration set reads every training image).
    bad = copy_of_data('truncated')
    image = osp.join(bad, 'train', 'n00000001', 'train_1.JPEG')
    with open(image, 'rb') as f:
        head = f.read(200)
    with open(image, 'wb') as f:
        f.write(head)
    assert_clean_failure(run(bad), f'cannot decode image {image}', wd)
    # An annotation line that names a folder, not a file.
    bad = copy_of_data('folder')
    with open(osp.join(bad, 'meta', 'train.txt'), 'a') as f:
        f.write('n00000001 1\n')
    assert_clean_failure(
        run(bad, 'quantizer.calib.seed=1'),
        f"cannot read {osp.join(bad, 'train', 'n00000001')} (Is a directory)",
        wd)
    # Annotation files that list no images.
    bad = copy_of_data('empty_ann')
    for split in ('train', 'val'):
        open(osp.join(bad, 'meta', f'{split}.txt'), 'w').close()
    assert_clean_failure(run(bad), 'the test dataset', wd)
    assert_clean_failure(run(bad), 'lists no images', wd)
    # A label the 1000-class model cannot predict.
    bad = copy_of_data('label')
    with open(osp.join(bad, 'meta', 'val.txt'), 'a') as f:
        f.write('ILSVRC2012_val_00000000.JPEG 1000\n')
    assert_clean_failure(run(bad), "label 1000, outside the model's 1000 "
                         'classes', wd)
    # A setting of the wrong type given on the command line.
    assert_clean_failure(run(root, 'quantizer.search.maxiter=two'),
                         "search.maxiter='two' must be of type int", wd)
    assert_clean_failure(run(root, 'quantizer.calib.batch_size=big'),
                         "calib.batch_size='big' must be of type int", wd)


def test_work_dir_that_is_a_file_and_unexpected_keys(imagenet, tmp_path,
                                                     quantize_here):
    root, ckpt = imagenet
    opts = ['--cfg-options', *imagenet_cfg_options(root)]
    a_file = tmp_path / 'taken'
    a_file.write_text('not a folder')
    rc, _, err = quantize(CONFIG, '--checkpoint', ckpt, '--work-dir',
                          str(a_file), *opts)
    assert rc == 1 and 'Traceback' not in err, err[-2000:]
    assert f'error: work dir {a_file} is an existing file' in err
    assert a_file.read_text() == 'not a folder'  # untouched
    state = torch.load(ckpt)['state_dict']
    state['backbone.extra.weight'] = torch.zeros(3)
    extra = str(tmp_path / 'extra.pth')
    torch.save({'state_dict': state}, extra)
    wd = str(tmp_path / 'wd')
    assert_clean_failure(quantize_here(CONFIG, '--checkpoint', extra,
                                       '--work-dir', wd, *opts),
                         'does not fit the model: 1 unexpected keys (e.g. '
                         'backbone.extra.weight)', wd)
