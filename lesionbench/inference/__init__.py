"""Using trained runs, every engine through one loader: ``load_run`` (load.py; also
``lesionbench.load_run``), ``predict_files`` (predict.py), ``score_samples`` (score.py, for
``evaluate``), ``explain_file`` (explain.py, pytorch-grad-cam) and ``export_run`` (export.py).

Import from the modules (``from lesionbench.inference.predict import predict_files``) so that
``import lesionbench.inference`` stays cheap. Nothing here imports Lightning.
"""
