"""Code tasks (HumanEval, CodeContests): their programs run in :mod:`spolab.sandbox`."""
