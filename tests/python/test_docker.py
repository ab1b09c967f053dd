"""docker/: what can be checked without a Docker engine (none on these machines).

hadolint lints both Dockerfiles in the test command (scripts/test.sh). Here: the compose file
maps what the README promises (camera, calibration, models, recordings and engine-cache
volumes, the NVIDIA runtime on Jetson), every file the Dockerfiles copy exists, base images are
pinned tags, the build uses the package's own CMake/colcon path with the right Cargo features,
and the launch arguments the images pass are ones the launch file declares.
"""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / 'docker'
LAUNCH = ROOT / 'launch' / 'dinov3_perception.launch.py'


def dockerfile(name):
    return (DOCKER / name).read_text()


def launch_arguments():
    return set(re.findall(r"DeclareLaunchArgument\(\s*'([a-z_]+)'", LAUNCH.read_text()))


def test_compose_maps_camera_models_calibration_and_volumes():
    compose = yaml.safe_load((DOCKER / 'compose.yaml').read_text())
    services = compose['services']
    assert set(services) == {'dinov3', 'jetson'}
    for name, svc in services.items():
        assert '/dev/video0:/dev/video0' in svc['devices'], name
        volumes = svc['volumes']
        assert '../calibration:/calibration:ro' in volumes, name
        assert '../models:/models:ro' in volumes, name
        assert 'recordings:/recordings' in volumes, name
        assert 'engine-cache:/var/cache/dinov3_perception' in volumes, name
        assert (DOCKER / svc['build']['dockerfile'].removeprefix('docker/')).is_file(), name
        args = {a.split(':=')[0] for a in svc['command'] if ':=' in a}
        assert args <= launch_arguments(), args - launch_arguments()
    assert set(compose['volumes']) == {'recordings', 'engine-cache'}
    jetson = services['jetson']
    assert jetson['runtime'] == 'nvidia'
    assert jetson['profiles'] == ['jetson']
    assert 'provider:=tensorrt' in jetson['command']
    assert 'backend:=onnxruntime' in jetson['command']
    assert 'runtime' not in services['dinov3']


def test_dockerfiles_copy_only_what_exists_and_pin_their_bases():
    for name in ('Dockerfile', 'Dockerfile.jetson'):
        text = dockerfile(name)
        stages = re.findall(r'^FROM\s+(\S+)\s+AS\s+(\w+)', text, re.M)
        assert [s for _, s in stages] == ['build', 'runtime'], name
        for arg in re.findall(r'^ARG\s+\w*IMAGE=(\S+)', text, re.M):
            repo, _, tag = arg.partition(':')
            assert tag and tag != 'latest', f'{name}: base image {arg} is not pinned'
        assert re.search(r'^ARG RUST_VERSION=\d+\.\d+\.\d+$', text, re.M), name
        for src in re.findall(r'^COPY\s+(?!--from)(.+?)\s+\S+$', text, re.M):
            for part in src.split():
                assert (ROOT / part).exists(), f'{name} copies {part}, which does not exist'
        assert 'colcon build' in text and 'DINOV3_CARGO_FEATURES' in text, name
        assert 'ENTRYPOINT' in text and 'VOLUME' in text, name


def test_jetson_image_builds_humble_with_onnxruntime_and_finds_the_library():
    text = dockerfile('Dockerfile.jetson')
    assert '-DDINOV3_CARGO_FEATURES=humble,onnxruntime' in text
    assert 'l4t-r36' in text
    assert 'onnxruntime-gpu==' in text
    # The node's library search includes /opt/onnxruntime/lib/libonnxruntime.so.
    assert '/opt/onnxruntime/lib/libonnxruntime.so' in text
    assert '/opt/onnxruntime/lib' in (ROOT / 'src/backend/onnxruntime/library.rs').read_text()
    x86 = dockerfile('Dockerfile')
    assert 'ARG FEATURES=jazzy' in x86 and 'ros:jazzy' in x86


def test_entrypoints_source_ros_and_the_install_space():
    for name in ('entrypoint.sh', 'entrypoint.jetson.sh'):
        path = DOCKER / name
        text = path.read_text()
        assert path.stat().st_mode & 0o111, f'{name} is not executable'
        assert 'setup.bash' in text and 'exec "$@"' in text
