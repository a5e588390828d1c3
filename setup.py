from setuptools import setup

# cffi builds the extension against the stable ABI (Py_LIMITED_API, file _core.abi3.so); tagging the wheel
# cp310-abi3 makes the one wheel installable on every CPython >= 3.10.
setup(
    cffi_modules=["build.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
