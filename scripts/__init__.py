"""Development tooling (not part of the installed product): the tiny random Molmo2 builder (`tiny_model`), the
vLLM development server (`vllm_server`), the soak run and the ROS wheel repair. Importable from the checkout's
root (`from scripts.tiny_model import build_tiny_model`) by the tests, benches and training scripts."""
