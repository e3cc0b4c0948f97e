"""The project's Fast DDS profile (config/fastdds_shm.xml) is loaded on this distribution: best-effort 1080p frames
arrive over shared memory with the environment the tests, benches and soak use (helpers/ros_env.ros_overrides, variable
names per $ROS_DISTRO), and are lost with the default transports (no profile). On Jazzy (Fast DDS 2.14) the
profile is read from FASTRTPS_DEFAULT_PROFILES_FILE only, on Kilted (Fast DDS 3) from FASTDDS_DEFAULT_PROFILES_FILE,
which alone must not make Fast DDS 3 warn about the old name."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.ros_client import TEST_DIR, process_env
from molmo2_ros.ros.environment import FASTDDS2_PROFILE_VAR, FASTDDS3_PROFILE_VAR

FRAMES = 20
CAMERA = {"topic": "/shm_check/image_raw", "qos": "best_effort", "rate": 10, "count": FRAMES, "dt": 0.1,
          "width": 1920, "height": 1080}


def send_1080p(env: dict[str, str]) -> tuple[int, str]:
    """(frames received of FRAMES best-effort 1920x1080 rgb8 frames at 10 Hz, stderr of both processes)."""
    env = process_env(env)
    counter = subprocess.Popen([sys.executable, str(TEST_DIR / "helpers" / "image_counter.py"), CAMERA["topic"],
                                "best_effort", str(FRAMES), "20"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert counter.stdout.readline().strip() == "READY"
        camera = subprocess.run([sys.executable, str(TEST_DIR / "helpers" / "camera_publisher.py"), json.dumps(CAMERA)],
                                env=env, capture_output=True, text=True, timeout=120)
        assert camera.returncode == 0, camera.stderr[-2000:]
        out, err = counter.communicate(timeout=60)
    finally:
        if counter.poll() is None:
            counter.kill()
            counter.wait()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sizes"] in ([], ["1920x1080"])
    return result["received"], camera.stderr + err


def test_1080p_best_effort_frames_arrive_over_shared_memory_with_the_profile(ros_env):
    received, stderr = send_1080p(ros_env)
    print(f"with the profile: {received}/{FRAMES} best-effort 1080p frames")
    assert received >= FRAMES - 1, stderr[-2000:]
    assert FASTDDS2_PROFILE_VAR not in stderr and "deprecated" not in stderr.lower(), stderr[-2000:]


def test_without_the_profile_the_same_frames_are_lost(ros_env):
    """The control: the default transports (UDP + a small shared-memory segment) drop best-effort 1080p frames,
    so the test above can only pass when the profile was loaded."""
    env = {k: v for k, v in ros_env.items() if k not in (FASTDDS2_PROFILE_VAR, FASTDDS3_PROFILE_VAR,
                                                         "RMW_FASTRTPS_USE_QOS_FROM_XML")}
    received, _ = send_1080p(env)
    print(f"without the profile: {received}/{FRAMES} best-effort 1080p frames")
    assert received <= FRAMES // 2
