"""Using trained runs: ``load_run`` (load.py), ``predict_files`` (predict.py),
``explain_file`` (explain.py, pytorch-grad-cam) and ``export_run`` (export.py).

Import from the modules (``from lesionbench.inference.predict import predict_files``) so that
``import lesionbench.inference`` stays cheap.
"""
