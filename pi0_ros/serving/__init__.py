"""Remote inference in openpi's websocket protocol (ROS-free).

- `protocol`: msgpack with numpy arrays as ``{__ndarray__, data, dtype, shape}`` (never pickle).
- `keys`: declarative key sets (config/serving/*.yaml) that map openpi observation dicts
  (ALOHA, DROID, LIBERO, ours) onto the model's camera slots and padded state.
- `server`: `PolicyServer`, a `Policy` behind the protocol (`pi0-ros serve`).
- `client`: `RemotePolicy`, the `Policy` interface backed by any openpi-protocol server.
"""
