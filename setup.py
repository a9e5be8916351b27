"""fastreid-ext: AANet, APR, HA-CNN, RBNet and MMT domain adaptation as plugins of FastReID 1.4.0 (loss
registry, attribute evaluation, keypoint data, synthetic re-id data and scenes, ONNX / TorchScript export).

Install with `make venv` (pins in requirements.txt; FastReID itself goes in with --no-deps because
its metadata pins torch 1.13.1).
"""
from setuptools import find_packages, setup

setup(
    name="fastreid-ext",
    version="0.1.0",
    description="Re-id methods (AANet, APR, HA-CNN, RBNet, MMT) as FastReID plugins, with export and person-search data",
    packages=find_packages(include=["fastreid_ext", "fastreid_ext.*"]),
    python_requires=">=3.10",
    install_requires=[
        # fastreid==1.4.0 is installed separately with --no-deps (its metadata pins torch 1.13.1)
        "torch>=2.0", "torchvision>=0.15", "numpy", "scipy", "yacs",
        "tabulate", "termcolor", "tensorboard", "tqdm", "pillow", "scikit-learn", "faiss-gpu",
        "opencv-contrib-python-headless<5", "matplotlib", "onnx", "onnxscript", "onnxruntime",
    ],
)
