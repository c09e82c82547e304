"""sim_node: a MuJoCo robot behind the same ROS topics as the real one.

Publishes what the robot drivers publish, as the embodiment YAML names them:
- sensor_msgs/JointState on every ``joint_state_sources`` topic (names = the YAML's joint
  fields of that source, grippers in the YAML's robot units), every control tick;
- sensor_msgs/Image (rgb8) on every camera topic at ``image_rate_hz``;
- rosgraph_msgs/Clock on /clock (``publish_clock``), header stamps = sim time (monotonic
  across episode resets);
and takes every output's command the way the real robot's controller does: Float64MultiArray in
the output's dims order (forward controllers), Twist / TwistStamped for the base, Interbotix
JointGroupCommand / JointSingleCommand; JointTrajectory topics, FollowJointTrajectory and
GripperCommand action servers through stand-ins of joint_trajectory_controller and
gripper_action_controller (pi0_ros.controllers: same acceptance rules, trajectories interpolated
at every physics step, rejected ones counted and never executed, gripper goals succeed or abort).
Controllers keep the simulator's clock (/clock): run the executor with use_sim_time. So switching
between sim and hardware changes no policy/executor config.

Also: ``~/reset`` (std_srvs/Trigger: new episode, next seed), ``~/success`` (std_msgs/Bool),
``/prompt`` (std_msgs/String, transient local) with the task's language instruction.

Physics runs in real time on the node's own thread (absolute wall-clock deadlines at the control
rate), which also owns the OpenGL context: EGL contexts are bound to one thread, and an
executor's worker threads change from callback to callback. If rendering cannot keep up, sim
time simply runs slower than wall time (every stamp and /clock stay consistent).
All logic lives in pi0_ros.sim (SimEnv); this node only converts messages.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable

from pi0_ros import sim as _sim  # noqa: F401  (MUJOCO_GL before mujoco)

from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from pi0_ros.robots.embodiment import Output
from pi0_ros.ros.common import join_thread, run_node
from pi0_ros.ros.controller_servers import ControllerInterfaces
from pi0_ros.ros.conversions import rgb_to_image, sec_to_stamp
from pi0_ros.sim.env import SimEnv

PROMPT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
CLOCK_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class SimNode(Node):
    """rclpy shell around :class:`pi0_ros.sim.env.SimEnv`."""

    def __init__(self, node_name: str = "sim", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        p = self.declare_parameter
        self.embodiment_name = p("embodiment", "trossen_bimanual").value
        self.task_name = p("task", "pick_cube").value
        self.seed = int(p("seed", 0).value)
        self.image_rate_hz = float(p("image_rate_hz", 15.0).value)
        self.image_size = int(p("image_size", 224).value)
        self.publish_clock = bool(p("publish_clock", True).value)
        # DART-style joint disturbances for collecting demonstrations (pi0_ros.sim.disturbance).
        self.disturbance_std = float(p("disturbance_std", 0.0).value)
        self.disturbance_tau = float(p("disturbance_tau", 0.5).value)
        self._lock = threading.Lock()  # env access: sim thread vs callbacks / reset requests
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._resets: list[tuple[int | None, str | None, threading.Event, list]] = []
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pi0_sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error
        emb = self.embodiment = self.env.embodiment
        self._time_offset = 0.0      # sim time of the current episode's start (monotonic stamps)
        self._ticks_since_image = 10 ** 9
        self._episode = 0
        self.reset_hooks: list[Callable[[], None]] = []  # called on the sim thread after each reset
        # Pause (lockstep evaluation): physics and sim time stand still while pause() is in force or
        # any hold condition is true; evaluated by the sim thread before every tick.
        self.hold_conditions: list[Callable[[], bool]] = []
        self._pause = threading.Event()
        self._held = threading.Event()   # the sim thread stands still (cleared before any step)
        self.held_s = 0.0                # wall seconds stood still, for wall-clock guards
        # Called on the sim thread after every physics tick (its state published), with its sim
        # time: a lockstep evaluation ticks the executor here (ExecutorNode tick_source external).
        self.tick_hooks: list[Callable[[float], None]] = []
        self.commands_received: Counter[str] = Counter()  # topic commands taken, per output name
        self.physics_ticks = 0

        self._js_pubs = {src: self.create_publisher(JointState, topic, qos_profile_sensor_data)
                         for src, topic in emb.joint_state_sources.items()}
        self._img_pubs = {c.slot: self.create_publisher(Image, c.topic, qos_profile_sensor_data)
                          for c in emb.cameras if not c.compressed}
        if any(c.compressed for c in emb.cameras):
            self.get_logger().warn("compressed camera topics are not simulated (raw Image only)")
        self._clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS) if self.publish_clock else None
        self._odom_pub = (self.create_publisher(Odometry, emb.odometry_topic, qos_profile_sensor_data)
                          if emb.odometry_topic else None)
        self._success_pub = self.create_publisher(Bool, "~/success", 10)
        self._prompt_pub = self.create_publisher(String, "/prompt", PROMPT_QOS)
        self._subs = [self._subscribe(o) for o in emb.outputs]
        # Outputs taken on plain topics (counted in commands_received); the others go to the
        # controller stand-ins below.
        self.topic_outputs = [o.name for o, sub in zip(emb.outputs, self._subs) if sub is not None]
        # Trajectory and gripper-action outputs: the robot controllers' topics and action servers.
        self._ctl_lock = threading.Lock()  # env.controllers: sim thread (stepping) vs command callbacks
        self.controller_interfaces = ControllerInterfaces(
            self, emb, self.env.controllers, self._ctl_lock, lambda: self.env.controller_time,
            lambda name: float(self.env.measured_positions()[self.env.controllers.outputs[name].indices[0]]))
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._publish_prompt()
        self._running = True
        self.get_logger().info(
            f"sim '{emb.name}' task '{self.task_name}' seed {self.seed}: prompt '{self.env.prompt}', "
            f"{emb.control_rate_hz:g} Hz control ({self.env.n_substeps} substeps), images {self.image_size}^2 at "
            f"{self.image_rate_hz:g} Hz")

    # ------------------------------------------------------------------ commands
    def _subscribe(self, o: Output):
        if o.type == "std_msgs/msg/Float64MultiArray":
            return self.create_subscription(Float64MultiArray, o.topic, lambda m, o=o: self._on_array(o, m), 10)
        if o.type in ("trajectory_msgs/msg/JointTrajectory", "control_msgs/action/FollowJointTrajectory",
                      "control_msgs/action/GripperCommand"):
            return None  # ControllerInterfaces (the stand-in controllers)
        if o.type == "geometry_msgs/msg/Twist":
            return self.create_subscription(Twist, o.topic, lambda m, o=o: self._on_twist(o, m), 10)
        if o.type == "geometry_msgs/msg/TwistStamped":
            return self.create_subscription(TwistStamped, o.topic, lambda m, o=o: self._on_twist(o, m.twist), 10)
        if o.type in ("interbotix_xs_msgs/msg/JointGroupCommand", "interbotix_xs_msgs/msg/JointSingleCommand"):
            try:
                from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand  # type: ignore
            except ImportError:
                self.get_logger().error(f"output '{o.name}': interbotix_xs_msgs is not installed; not subscribed")
                return None
            if o.type.endswith("JointSingleCommand"):
                return self.create_subscription(JointSingleCommand, o.topic, lambda m, o=o: self._set(o, [m.cmd]), 10)
            return self.create_subscription(JointGroupCommand, o.topic,
                                            lambda m, o=o: self._set(o, list(m.cmd)), 10)
        self.get_logger().error(f"output '{o.name}': unsupported type {o.type}")
        return None

    def _set(self, o: Output, values) -> None:
        self.commands_received[o.name] += 1
        try:
            self.env.set_command(o.name, values)
        except (ValueError, KeyError) as e:
            self.get_logger().warn(f"{o.topic}: command rejected: {e}", throttle_duration_sec=2.0)

    def _on_array(self, o: Output, msg: Float64MultiArray) -> None:
        self._set(o, list(msg.data))

    def _on_twist(self, o: Output, msg: Twist) -> None:
        by_kind = {"base_vx": msg.linear.x, "base_vy": msg.linear.y, "base_wz": msg.angular.z}
        kinds = [self.embodiment.dims[i].kind for i in o.indices]
        self._set(o, [by_kind[k] for k in kinds])

    # ------------------------------------------------------------------ episode
    def _publish_prompt(self) -> None:
        self._prompt_pub.publish(String(data=self.env.prompt))

    def reset_episode(self, seed: int | None = None, prompt: str | None = None, timeout: float = 10.0) -> str:
        """Start a new episode (next seed by default); `prompt` picks the target instead of the seed.

        Runs on the sim thread (it owns the GL context); this call waits for it."""
        done, box = threading.Event(), []
        with self._lock:
            self._resets.append((seed, prompt, done, box))
        if not done.wait(timeout):
            raise TimeoutError("simulator did not reset in time")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _do_reset(self, seed: int | None, prompt: str | None) -> str:
        self._time_offset += self.env.time + self.embodiment.dt
        self._episode += 1
        self.seed = self.seed + 1 if seed is None else int(seed)
        with self._ctl_lock:
            self.env.clock_offset = self._time_offset  # the controllers keep the monotonic sim clock
            self.env.reset(self.seed, prompt=prompt)
        for hook in self.reset_hooks:  # on this thread, before the new episode's first step
            hook()
        self._ticks_since_image = 10 ** 9
        self._publish_prompt()
        self._publish_state()
        return self.env.prompt

    @property
    def episode_start_time(self) -> float:
        """Sim time (s) of the current episode's tick 0 (stamps keep increasing across resets)."""
        return self._time_offset

    def _on_reset(self, request, response):
        try:
            prompt = self.reset_episode()
            response.success = True
            response.message = f"episode {self._episode} seed {self.seed}: {prompt}"
        except Exception as e:  # noqa: BLE001 - report to the caller
            response.success = False
            response.message = f"reset failed: {e}"
        return response

    # ------------------------------------------------------------------ stepping + publishing
    def pause(self, timeout: float = 2.0) -> bool:
        """Stop physics and sim time until resume(); returns once the sim thread stands still
        (False if it did not within `timeout` s: it is still paused from its next tick on)."""
        self._pause.set()
        if threading.current_thread() is self._thread:
            return True
        return self._held.wait(timeout)

    def resume(self) -> None:
        self._pause.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def sim_time(self) -> float:
        return self._time_offset + self.env.time

    def _run(self) -> None:
        try:
            self.env = SimEnv(self.embodiment_name, seed=self.seed, task=self.task_name,
                              image_size=self.image_size, render=self.image_rate_hz > 0,
                              disturbance_std=self.disturbance_std, disturbance_tau=self.disturbance_tau)
        except BaseException as e:  # noqa: BLE001 - re-raised in the constructor
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        while not getattr(self, "_running", False) and not self._stop.is_set():
            time.sleep(0.001)  # publishers are created after the env exists
        period = self.env.embodiment.dt
        next_t = time.monotonic()
        held_since: float | None = None
        while not self._stop.is_set():
            with self._lock:
                resets, self._resets = self._resets, []
            for seed, prompt, done, box in resets:
                try:
                    box.append(self._do_reset(seed, prompt))
                except Exception as e:  # noqa: BLE001 - handed to the caller
                    box.append(e)
                done.set()
            now = time.monotonic()
            if self._pause.is_set() or any(c() for c in self.hold_conditions):
                # Standing still: re-check every millisecond (a lockstep wait for a command in
                # flight is short), and once per period keep joint states and /clock coming at
                # the frozen stamp: the executor's watchdog measures their freshness in monotonic
                # receipt time (0.25 s) and would otherwise hold the robot. No images, no physics.
                self._held.set()
                if held_since is None:
                    held_since = now
                if now >= next_t:
                    self._publish_state(images=False)
                    next_t = now + period
                time.sleep(0.001)
                continue
            if held_since is not None:
                self.held_s += now - held_since
                held_since = None
                next_t = max(next_t, now)  # the tick after a hold runs now: sim time never jumps
            self._held.clear()
            self._on_tick()
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # behind (slow rendering): sim time runs slower, no burst
        self.env.close()

    def _on_tick(self) -> None:
        with self._ctl_lock:
            self.env.step()
        self.physics_ticks += 1
        self._publish_state()
        t = self.sim_time
        for hook in self.tick_hooks:
            hook(t)

    def _publish_state(self, images: bool = True) -> None:
        stamp = sec_to_stamp(self.sim_time)
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=stamp))
        pos, vel, eff = self.env.joint_positions(), self.env.joint_velocities(), self.env.joint_efforts()
        for src, pub in self._js_pubs.items():
            msg = JointState()
            msg.header.stamp = stamp
            names = list(pos[src])
            msg.name = names
            msg.position = [pos[src][n] for n in names]
            msg.velocity = [vel[src][n] for n in names]
            msg.effort = [eff[src][n] for n in names]
            pub.publish(msg)
        if self._odom_pub is not None:
            self._publish_odom(stamp)
        if not images:
            return
        self._ticks_since_image += 1
        if self._img_pubs and self.image_rate_hz > 0 and \
                self._ticks_since_image * self.embodiment.dt >= 1.0 / self.image_rate_hz - 1e-9:
            self._ticks_since_image = 0
            self._publish_images(stamp)
            self._success_pub.publish(Bool(data=bool(self.env.success())))

    def _publish_odom(self, stamp: TimeMsg) -> None:
        v = self.env.base_velocity()
        x, y, yaw = self.env.base_pose
        msg = Odometry()
        msg.header.stamp = stamp
        msg.header.frame_id = "odom"
        msg.child_frame_id = "base_link"
        msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
        msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        msg.twist.twist.linear.x = v.get("base_vx", 0.0)
        msg.twist.twist.linear.y = v.get("base_vy", 0.0)
        msg.twist.twist.angular.z = v.get("base_wz", 0.0)
        self._odom_pub.publish(msg)

    def _publish_images(self, stamp: TimeMsg) -> None:
        images = self.env.render(list(self._img_pubs))
        for slot, im in images.items():
            self._img_pubs[slot].publish(rgb_to_image(im, stamp, frame_id=self.env.scene.cameras[slot]))

    def destroy_node(self) -> None:
        self._stop.set()
        join_thread(self._thread, self.get_logger(), "the simulator thread to finish its current step")
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(SimNode, args)



if __name__ == "__main__":
    main()
