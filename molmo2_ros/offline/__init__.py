"""Offline tools, by concern: `data` (bags in and out, synthetic scenarios with ground truth), `replay` (the node's
pipeline over a bag, deterministic; `annotations`: the output bag's Foxglove annotations), `evaluation` (scores,
targets, the oracle evaluation instrument) and `report` (HTML report, demo video). ROS-free except
`data.player`."""
