"""ROS 2 packaging: package.xml, CMakeLists.txt, the launch file and the parameters YAML.

No ROS 2 here: `launch` / `launch_ros` are not on PyPI (the PyPI project named `launch` is an
unrelated 2017 package), so the launch file is loaded against small stand-ins for the modules
it imports that record what it builds, with the real constructors' signatures.

What launch_ros then gives the executable (launch_ros/launch_ros/actions/node.py, repository
ros2/launch_ros, commit eb66680ac2cf9717e6f7401ef5f4d85ad6fcc0a3: Node.__init__,
_perform_substitutions, execute, _create_params_file_from_dict; the parameter-file key is the
fully qualified node name since ros2/launch_ros#154, `/**` only when name or namespace is not
given). For namespace:=robot1 and image_topic:=/camera/image_raw:

    <prefix>/lib/dinov3_perception/dinov3_perception run --ros-args
        -r __node:=dinov3_perception -r __ns:=/robot1
        --params-file <share>/config/dinov3_perception.params.yaml
        --params-file /tmp/launch_params_XXXXXXXX

i.e. executable, `arguments`, '--ros-args', '-r __node:=NAME' (from __init__), '-r __ns:=/NS'
(from _perform_substitutions; '/' with namespace:=''), then one '--params-file FILE' per
`parameters` entry in order (a dict becomes a temporary file), then remappings ('-r a:=b') if
any. The temporary file is yaml.dump({FQN: {'ros__parameters': params}},
default_flow_style=False) with the dict's values normalised by launch_ros/utilities/
normalize_parameters.py + evaluate_parameters.py (a str goes through yaml.dump then
yaml.safe_load, so stays a str; bool/int/float are kept), keys sorted, nested dicts flattened to
dotted names:

    /robot1/dinov3_perception:
      ros__parameters:
        heads_enabled: true
        source: ros:/camera/image_raw

(bools as true/false, ints as 4, floats as 0.0, strings plain unless YAML would read them as
another type, e.g. 'true' or '' stay quoted). With namespace:='' the key is /dinov3_perception.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
import yaml
from lxml import etree

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_XML = ROOT / 'package.xml'
CARGO_TOML = ROOT / 'Cargo.toml'
CMAKELISTS = ROOT / 'CMakeLists.txt'
LAUNCH_FILE = ROOT / 'launch' / 'dinov3_perception.launch.py'
PARAMS_FILE = ROOT / 'launch' / 'dinov3_perception.params.yaml'
XSD = ROOT / 'tests' / 'fixtures' / 'ros' / 'package_format3.xsd'

FAKE_SHARE = '/opt/ros/fake/share/dinov3_perception'

# name -> (Python type after yaml.safe_load, default)
PARAMETERS = {
    'source': (str, 'synthetic'),
    'model': (str, ''),
    'heads_dir': (str, ''),
    'heads_enabled': (bool, True),
    'max_frames': (int, 0),
    'fps': (float, 0.0),
    'width': (int, 640),
    'height': (int, 480),
    'pixel_format': (str, ''),
    'seed': (int, 0),
    'anomaly_rate': (float, 0.0),
    'loop_files': (bool, False),
    'backend': (str, 'native'),
    'threads': (int, 0),
    'onnxruntime.library': (str, ''),
    'onnxruntime.provider': (str, 'cpu'),
    'onnxruntime.heads': (bool, False),
    'onnxruntime.device_id': (int, 0),
    'tensorrt.precision': (str, 'fp16'),
    'tensorrt.cache_dir': (str, ''),
    'on_backend_failure': (str, 'fallback'),
    'parity.min_cosine_fp32': (float, 0.9999),
    'parity.min_cosine_fp16': (float, 0.999),
    'parity.min_cosine_int8': (float, 0.999),
    'input_size': (str, ''),
    'resize': (str, 'stretch'),
    'frame_id': (str, ''),
    'calibration_file': (str, ''),
    'undistort': (bool, False),
    'points.enabled': (bool, True),
    'points.stride': (int, 4),
    'points.rgb': (bool, True),
    'debug_image': (bool, False),
    'qos.reliable_topics': (str, ''),
    'status_interval': (float, 1.0),
    'foxglove.address': (str, ''),
    'pca_fit_frames': (int, 30),
    'record.dir': (str, ''),
    'record.topics': (str, ''),
    'record.images': (str, 'raw'),
    'record.jpeg_quality': (int, 90),
    'record.compression': (str, 'zstd'),
    'record.chunk_size_kb': (int, 1024),
    'record.split_size_mb': (int, 0),
    'record.split_duration': (float, 0.0),
    'record.queue_mb': (int, 256),
    'record.flush_interval': (float, 1.0),
    'replay.rate': (float, 1.0),
    'replay.topic': (str, ''),
}
for _head in ('detection', 'segmentation', 'depth', 'classification', 'anomaly', 'pca'):
    PARAMETERS[f'heads.{_head}.enabled'] = (bool, True)
    PARAMETERS[f'heads.{_head}.rate_hz'] = (float, 0.0)
# detection.score_threshold / detection.nms_iou_threshold: defaults come from the head's
# manifest, so the file has them commented out.
COMMENTED_OUT = ('detection.score_threshold', 'detection.nms_iou_threshold')


# ---------------------------------------------------------------------------------------------
# package.xml


def test_package_xml_validates_against_rep149_format3_schema():
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.parse(str(PACKAGE_XML))
    assert schema.validate(doc), '\n'.join(str(e) for e in schema.error_log)


def test_schema_rejects_a_broken_package_xml():
    # The validator really validates: no maintainer, and a version that is not X.Y.Z.
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.parse(str(PACKAGE_XML))
    root = doc.getroot()
    root.remove(root.find('maintainer'))
    assert not schema.validate(doc)
    doc = etree.parse(str(PACKAGE_XML))
    doc.getroot().find('version').text = '0.1'
    assert not schema.validate(doc)


def test_package_xml_matches_cargo_toml():
    cargo = tomllib.loads(CARGO_TOML.read_text())['package']
    root = etree.parse(str(PACKAGE_XML)).getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == cargo['name'] == 'dinov3_perception'
    assert root.findtext('version') == cargo['version']
    assert root.findtext('license') == cargo['license']
    assert root.findtext('export/build_type') == 'ament_cmake'
    assert [e.text for e in root.findall('buildtool_depend')] == ['ament_cmake']
    exec_depends = {e.text for e in root.findall('exec_depend')}
    for dep in ('launch', 'launch_ros', 'sensor_msgs', 'vision_msgs', 'diagnostic_msgs',
                'std_msgs', 'builtin_interfaces'):
        assert dep in exec_depends, dep


# ---------------------------------------------------------------------------------------------
# CMakeLists.txt


def test_cmakelists_builds_with_cargo_and_installs_everything():
    text = CMAKELISTS.read_text()
    assert re.search(r'project\(\s*dinov3_perception\b', text)
    assert 'find_package(ament_cmake REQUIRED)' in text
    assert re.search(r'find_program\(\s*CARGO_EXECUTABLE\s+cargo', text)
    assert 'FATAL_ERROR' in text
    assert re.search(r'add_custom_target\(\s*\S+\s+ALL', text)
    assert '--release' in text
    assert '--target-dir "${CARGO_TARGET_DIR}"' in text
    assert 'set(CARGO_TARGET_DIR "${CMAKE_CURRENT_BINARY_DIR}/cargo")' in text
    assert 'DESTINATION lib/${PROJECT_NAME}' in text
    assert 'DESTINATION share/${PROJECT_NAME}/launch' in text
    assert 'DESTINATION share/${PROJECT_NAME}/config' in text
    assert 'DESTINATION share/${PROJECT_NAME}/calibration' in text
    assert 'DESTINATION share/${PROJECT_NAME}/models/demo' in text
    assert text.rstrip().endswith('ament_package()')


FAKE_AMENT_CMAKE = '''
macro(ament_package)
  install(CODE "file(WRITE \\"\\${CMAKE_INSTALL_PREFIX}/share/ament_index/resource_index/packages/${PROJECT_NAME}\\" \\"\\")")
endmacro()
'''

FAKE_CARGO = '''#!/bin/sh
# Records its arguments and makes the binary cargo would make.
echo "$@" > "$(dirname "$0")/cargo-args.txt"
prev=""
for a in "$@"; do
  if [ "$prev" = "--target-dir" ]; then td="$a"; fi
  prev="$a"
done
mkdir -p "$td/release"
printf '#!/bin/sh\\n' > "$td/release/dinov3_perception"
chmod +x "$td/release/dinov3_perception"
'''


def find_cmake():
    """cmake from the venv (models/requirements.txt pins the PyPI wheel), else from PATH."""
    venv = Path(sys.executable).parent / 'cmake'
    found = str(venv) if venv.exists() else shutil.which('cmake')
    assert found, 'cmake is missing: scripts/test.sh installs it into the venv (models/requirements.txt)'
    return found


def test_cmake_configure_build_install_with_stand_ins(tmp_path):
    """Runs CMakeLists.txt for real, with a stand-in ament_cmake and a stand-in cargo."""
    cmake = find_cmake()
    stub = tmp_path / 'ament_cmake'
    stub.mkdir()
    (stub / 'ament_cmakeConfig.cmake').write_text(FAKE_AMENT_CMAKE)
    cargo = tmp_path / 'bin' / 'cargo'
    cargo.parent.mkdir()
    cargo.write_text(FAKE_CARGO)
    cargo.chmod(0o755)
    build, prefix = tmp_path / 'build', tmp_path / 'install'
    env = {k: v for k, v in os.environ.items() if k != 'ROS_DISTRO'}
    for cmd in (
        [cmake, '-S', str(ROOT), '-B', str(build), f'-Dament_cmake_DIR={stub}',
         f'-DCARGO_EXECUTABLE={cargo}', f'-DCMAKE_INSTALL_PREFIX={prefix}'],
        [cmake, '--build', str(build)],
        [cmake, '--install', str(build)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout + done.stderr

    args = (cargo.parent / 'cargo-args.txt').read_text().split()
    assert args[:2] == ['build', '--release']
    assert args[args.index('--target-dir') + 1] == str(build / 'cargo')
    assert args[args.index('--manifest-path') + 1] == str(ROOT / 'Cargo.toml')

    share = prefix / 'share' / 'dinov3_perception'
    assert os.access(prefix / 'lib' / 'dinov3_perception' / 'dinov3_perception', os.X_OK)
    assert (share / 'launch' / 'dinov3_perception.launch.py').is_file()
    assert (share / 'config' / 'dinov3_perception.params.yaml').is_file()
    assert (share / 'models' / 'demo' / 'dinov3_tiny_240x320.onnx').is_file()
    assert (share / 'models' / 'demo' / 'detection.json').is_file()
    assert not (share / 'models' / 'demo' / 'make_demo.sh').exists()
    for f in (ROOT / 'calibration').glob('*.yaml'):
        assert (share / 'calibration' / f.name).is_file()


# ---------------------------------------------------------------------------------------------
# The launch file, against recording stand-ins of launch / launch_ros / ament_index_python


class Recorded:
    """Base of the stand-in actions: keeps the constructor's arguments."""

    def __repr__(self):
        return f'{type(self).__name__}({self.kwargs!r})'


def make_stand_ins():
    launch = types.ModuleType('launch')
    actions = types.ModuleType('launch.actions')
    substitutions = types.ModuleType('launch.substitutions')
    conditions = types.ModuleType('launch.conditions')
    launch_ros = types.ModuleType('launch_ros')
    launch_ros_actions = types.ModuleType('launch_ros.actions')
    ament = types.ModuleType('ament_index_python')
    ament_packages = types.ModuleType('ament_index_python.packages')

    class LaunchDescription(Recorded):
        def __init__(self, initial_entities=None, *, deprecated_reason=None):
            self.kwargs = {'initial_entities': initial_entities}
            self.entities = list(initial_entities or [])

    class DeclareLaunchArgument(Recorded):
        def __init__(self, name, *, default_value=None, description=None, choices=None,
                     **kwargs):
            self.kwargs = dict(name=name, default_value=default_value,
                               description=description, choices=choices, **kwargs)
            self.name, self.default_value, self.description = name, default_value, description

    class OpaqueFunction(Recorded):
        def __init__(self, *, function, args=None, kwargs=None, **left_over_kwargs):
            self.kwargs = dict(function=function, args=args, kwargs=kwargs)
            self.function, self.args, self.fn_kwargs = function, args or [], kwargs or {}

    class ExecuteProcess(Recorded):
        def __init__(self, *, cmd, name=None, cwd=None, env=None, additional_env=None,
                     shell=False, sigterm_timeout=None, sigkill_timeout=None,
                     emulate_tty=False, output='log', prefix=None, log_cmd=False,
                     on_exit=None, respawn=False, respawn_delay=0.0, **kwargs):
            self.kwargs = dict(cmd=cmd, name=name, output=output, **kwargs)

    class LaunchConfiguration(Recorded):
        def __init__(self, variable_name, *, default=None):
            self.kwargs = dict(variable_name=variable_name, default=default)

        def perform(self, context):
            return context.launch_configurations[self.kwargs['variable_name']]

    class IfCondition(Recorded):
        def __init__(self, predicate_expression):
            self.kwargs = dict(predicate_expression=predicate_expression)

    class UnlessCondition(IfCondition):
        pass

    class Node(Recorded):
        def __init__(self, *, executable, package=None, name=None, namespace=None,
                     exec_name=None, parameters=None, remappings=None, ros_arguments=None,
                     arguments=None, **kwargs):
            self.kwargs = dict(executable=executable, package=package, name=name,
                               namespace=namespace, exec_name=exec_name,
                               parameters=parameters, remappings=remappings,
                               ros_arguments=ros_arguments, arguments=arguments, **kwargs)

    def get_package_share_directory(package_name):
        if package_name != 'dinov3_perception':
            raise LookupError(f'package {package_name!r} not found (stand-in)')
        return FAKE_SHARE

    launch.LaunchDescription = LaunchDescription
    launch.actions, launch.substitutions, launch.conditions = actions, substitutions, conditions
    actions.DeclareLaunchArgument = DeclareLaunchArgument
    actions.OpaqueFunction = OpaqueFunction
    actions.ExecuteProcess = ExecuteProcess
    substitutions.LaunchConfiguration = LaunchConfiguration
    conditions.IfCondition = IfCondition
    conditions.UnlessCondition = UnlessCondition
    launch_ros.actions = launch_ros_actions
    launch_ros_actions.Node = Node
    ament.packages = ament_packages
    ament_packages.get_package_share_directory = get_package_share_directory
    return {
        'launch': launch, 'launch.actions': actions, 'launch.substitutions': substitutions,
        'launch.conditions': conditions, 'launch_ros': launch_ros,
        'launch_ros.actions': launch_ros_actions, 'ament_index_python': ament,
        'ament_index_python.packages': ament_packages,
    }


@pytest.fixture
def launch_module(monkeypatch):
    for name, module in make_stand_ins().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('dinov3_perception_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def description(launch_module):
    return launch_module.generate_launch_description()


def declared(description):
    return {e.name: e for e in description.entities if type(e).__name__ == 'DeclareLaunchArgument'}


def opaque(description):
    found = [e for e in description.entities if type(e).__name__ == 'OpaqueFunction']
    assert len(found) == 1
    return found[0]


def run_opaque(description, ros_namespace=None, **arguments):
    """Calls the OpaqueFunction as launch would: declared defaults overridden by `arguments`."""
    configs = {name: arg.default_value for name, arg in declared(description).items()}
    unknown = set(arguments) - set(configs)
    assert not unknown, f'not declared: {unknown}'
    configs.update(arguments)
    if ros_namespace is not None:
        configs['ros_namespace'] = ros_namespace
    context = types.SimpleNamespace(launch_configurations=configs)
    fn = opaque(description)
    actions = fn.function(context, *fn.args, **fn.fn_kwargs)
    nodes = [a for a in actions if type(a).__name__ == 'Node']
    processes = [a for a in actions if type(a).__name__ == 'ExecuteProcess']
    assert len(nodes) == 1 and len(nodes) + len(processes) == len(actions)
    return nodes[0].kwargs, [p.kwargs for p in processes]


EXPECTED_ARGUMENTS = {
    'camera_device': '',
    'image_topic': '',
    'model': '',
    'heads': 'true',
    'params_file': FAKE_SHARE + '/config/dinov3_perception.params.yaml',
    'namespace': '',
    'record': 'false',
    'record_dir': 'dinov3_bag',
    'backend': '',
    'provider': '',
    'engine_cache': '',
}


def test_launch_arguments_names_defaults_descriptions(description):
    args = declared(description)
    assert {n: a.default_value for n, a in args.items()} == EXPECTED_ARGUMENTS
    for name, arg in args.items():
        assert isinstance(arg.description, str) and arg.description.strip(), name


def test_default_launch_leaves_source_to_params_file(description):
    node, processes = run_opaque(description)
    assert node['package'] == 'dinov3_perception'
    assert node['executable'] == 'dinov3_perception'
    assert node['name'] == 'dinov3_perception'
    assert node['namespace'] == ''
    assert node['arguments'] == ['run']
    assert node['output'] == 'screen'
    assert node['parameters'] == [EXPECTED_ARGUMENTS['params_file'], {'heads_enabled': True}]
    assert processes == []


@pytest.mark.parametrize('arguments, overrides', [
    ({'image_topic': '/camera/image_raw'},
     {'source': 'ros:/camera/image_raw', 'heads_enabled': True}),
    ({'image_topic': '/camera/image_raw/compressed'},
     {'source': 'ros:/camera/image_raw/compressed', 'heads_enabled': True}),
    ({'camera_device': '/dev/video0'},
     {'source': 'v4l2:/dev/video0', 'heads_enabled': True}),
    # image_topic wins over camera_device.
    ({'camera_device': '/dev/video0', 'image_topic': 'image_raw'},
     {'source': 'ros:image_raw', 'heads_enabled': True}),
    ({'model': '/models/dinov3_vitb16.onnx', 'heads': 'false'},
     {'model': '/models/dinov3_vitb16.onnx', 'heads_enabled': False}),
    ({'heads': 'False'}, {'heads_enabled': False}),
    ({'heads': '1'}, {'heads_enabled': True}),
    ({'params_file': '/etc/robot/dinov3.yaml', 'camera_device': '/dev/video2'},
     {'source': 'v4l2:/dev/video2', 'heads_enabled': True}),
    ({'backend': 'onnxruntime', 'provider': 'tensorrt', 'engine_cache': '/cache'},
     {'backend': 'onnxruntime', 'onnxruntime.provider': 'tensorrt',
      'tensorrt.cache_dir': '/cache', 'heads_enabled': True}),
])
def test_parameter_overrides(description, arguments, overrides):
    node, _ = run_opaque(description, **arguments)
    params_file = arguments.get('params_file', EXPECTED_ARGUMENTS['params_file'])
    assert node['parameters'] == [params_file, overrides]
    assert type(node['parameters'][1]['heads_enabled']) is bool
    assert node['arguments'] == ['run']


def test_bad_bool_argument_is_an_error_naming_it(description):
    with pytest.raises(ValueError, match="'heads'"):
        run_opaque(description, heads='maybe')
    with pytest.raises(ValueError, match="'record'"):
        run_opaque(description, record='yes please')


def test_namespace_goes_to_node(description):
    node, _ = run_opaque(description, namespace='robot1')
    assert node['namespace'] == 'robot1'
    assert node['name'] == 'dinov3_perception'


def test_record_is_the_nodes_own_recorder(description):
    node, processes = run_opaque(description, namespace='robot1', record='true',
                                 record_dir='/data/run1')
    assert processes == []
    assert node['parameters'][1]['record.dir'] == '/data/run1'


def test_record_default_dir(description):
    node, processes = run_opaque(description, record='True')
    assert processes == []
    assert node['parameters'][1]['record.dir'] == 'dinov3_bag'


def test_no_record_sets_no_record_dir(description):
    node, _ = run_opaque(description)
    assert 'record.dir' not in node['parameters'][1]


# What launch_ros makes of the Node action (see the module docstring for the source).


def launch_ros_param_value(value):
    """launch_ros normalize_parameter_dict + evaluate_parameter_dict for a scalar value."""
    if isinstance(value, str):
        return yaml.safe_load(yaml.dump(value))
    assert isinstance(value, (bool, int, float))
    return value


def launch_ros_argv(node, executable_path, temp_files):
    """The argv launch_ros's Node runs (no remappings, no global params, no ros_namespace)."""
    namespace = node['namespace']
    namespace = '/' + namespace.strip('/') if namespace is not None else None
    argv = [executable_path] + list(node['arguments'] or []) + ['--ros-args']
    if node['name'] is not None:
        argv += ['-r', '__node:=' + node['name']]
    if namespace is not None:
        argv += ['-r', '__ns:=' + namespace]
    temp = iter(temp_files)
    for entry in node['parameters'] or []:
        argv += ['--params-file', next(temp) if isinstance(entry, dict) else entry]
    return argv


def launch_ros_params_yaml(node, params):
    namespace = '/' + (node['namespace'] or '').strip('/')
    fqn = namespace.rstrip('/') + '/' + node['name']
    params = {k: launch_ros_param_value(v) for k, v in params.items()}
    return yaml.dump({fqn: {'ros__parameters': params}}, default_flow_style=False)


def test_argv_and_temporary_params_file_launch_ros_would_give(description):
    node, _ = run_opaque(description, namespace='robot1', image_topic='/camera/image_raw')
    exe = '/opt/ros/fake/lib/dinov3_perception/dinov3_perception'
    argv = launch_ros_argv(node, exe, ['/tmp/launch_params_abc123'])
    assert argv == [
        exe, 'run', '--ros-args',
        '-r', '__node:=dinov3_perception',
        '-r', '__ns:=/robot1',
        '--params-file', FAKE_SHARE + '/config/dinov3_perception.params.yaml',
        '--params-file', '/tmp/launch_params_abc123',
    ]
    assert launch_ros_params_yaml(node, node['parameters'][1]) == (
        '/robot1/dinov3_perception:\n'
        '  ros__parameters:\n'
        '    heads_enabled: true\n'
        '    source: ros:/camera/image_raw\n'
    )

    node, _ = run_opaque(description, camera_device='/dev/video0', model='/m/vitb16.onnx',
                         heads='false')
    assert launch_ros_argv(node, exe, ['/tmp/p'])[3:7] == [
        '-r', '__node:=dinov3_perception', '-r', '__ns:=/']
    assert launch_ros_params_yaml(node, node['parameters'][1]) == (
        '/dinov3_perception:\n'
        '  ros__parameters:\n'
        '    heads_enabled: false\n'
        '    model: /m/vitb16.onnx\n'
        '    source: v4l2:/dev/video0\n'
    )


# ---------------------------------------------------------------------------------------------
# The parameters YAML


def flatten(mapping, prefix=''):
    """ROS 2's flattening of nested parameter maps into dotted names."""
    out = {}
    for key, value in mapping.items():
        name = prefix + str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def test_params_yaml_is_ros2_form_with_every_parameter_typed():
    doc = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(doc) == ['dinov3_perception']
    assert list(doc['dinov3_perception']) == ['ros__parameters']
    params = flatten(doc['dinov3_perception']['ros__parameters'])
    assert set(params) == set(PARAMETERS), (
        f'missing {set(PARAMETERS) - set(params)}, unexpected {set(params) - set(PARAMETERS)}')
    for name, (kind, default) in PARAMETERS.items():
        value = params[name]
        assert type(value) is kind, f'{name}: {value!r} is {type(value).__name__}, want {kind.__name__}'
        assert value == default, f'{name}: {value!r}, default is {default!r}'
    for name in COMMENTED_OUT:
        assert name not in params


def test_params_yaml_detection_thresholds_are_commented_out_with_a_note():
    text = PARAMS_FILE.read_text()
    assert re.search(r'^\s*#\s*detection:\s*$', text, re.M)
    for leaf in ('score_threshold', 'nms_iou_threshold'):
        assert re.search(rf'^\s*#\s*{leaf}:\s*[0-9.]+\s*$', text, re.M), leaf
    assert 'manifest' in text


def test_params_yaml_every_parameter_has_a_comment_line_above_it():
    lines = PARAMS_FILE.read_text().splitlines()
    body = lines[lines.index('  ros__parameters:') + 1:]
    for i, line in enumerate(body):
        m = re.match(r'^(\s*)([A-Za-z_][A-Za-z0-9_]*):\s*(\S.*)?$', line)
        if not m or m.group(3) is None:  # comments, blank lines, nested-map headers
            continue
        above = body[i - 1].strip()
        assert above.startswith('#') and len(above) > 2, f'no comment above: {line.strip()}'
