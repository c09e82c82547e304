"""pi0_ros: run the pi0 vision-language-action policy on ROS 2 robots.

The ROS-free core (model, robots, observation sync, chunking, safety, sim, data, training)
never imports rclpy; the ROS 2 nodes live in ``pi0_ros.ros``.
"""
# In the pip world the generated interfaces (pi0_ros.msg, pi0_ros.srv) are installed into
# site-packages/pi0_ros while this source tree is installed editable: let both directories
# serve the one package. In a colcon install both live in the same directory anyway.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
