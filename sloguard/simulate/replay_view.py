"""The repository as the replay sees it: the demo API's own spec (demo/slo.yaml) in place of the user's slo.yaml.

make simulate replays the 2024-01-15 incident of the demo API; the user's slo.yaml describes their service and
may name routes or jobs the demo never serves (then panels would stay empty and alerts never fire). The view is a
directory in the replay's work dir holding a link to every top-level entry of the repository except slo.yaml and
the generated ones (alerts/, dashboards/, mixin/, mixin.libsonnet: every top-level entry the generator writes),
which are generated there from demo/slo.yaml by the same generator as `make generate`. A link to a generated
directory would let the replay write through it into the repository. Everything that reads "the repository" (Stack, panel checks) is given the view instead.
"""
from __future__ import annotations

import os
import shutil

from sloguard.outputs import render_all
from sloguard.spec import load_spec
from sloguard.writer import write_tree

DEMO_SPEC = os.path.join("demo", "slo.yaml")


def replay_view(repo: str, workdir: str) -> str:
    """Build the view under `workdir` and return its path. Raises SpecError if demo/slo.yaml is invalid."""
    view = os.path.join(workdir, "repo")
    os.makedirs(view)
    spec_path = os.path.join(repo, DEMO_SPEC)
    files = render_all(load_spec(spec_path))
    generated = {"slo.yaml"} | {path.split("/", 1)[0] for path in files}
    for name in sorted(os.listdir(repo)):
        if name not in generated:
            os.symlink(os.path.join(repo, name), os.path.join(view, name))
    write_tree(view, files)
    shutil.copyfile(spec_path, os.path.join(view, "slo.yaml"))
    return view
