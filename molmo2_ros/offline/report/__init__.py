"""The HTML report and the demo video of a replay."""
