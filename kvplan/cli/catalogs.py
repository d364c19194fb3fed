"""``kvplan models`` and ``kvplan gpus``: the bundled catalogs."""

from __future__ import annotations

from kvplan.cli.core import app
from kvplan.cli.emit import write_json
from kvplan.cli.options import GpuFileOpt, JsonOpt, Units, UnitsOpt


@app.command()
def models(json: JsonOpt = False, units: UnitsOpt = Units.iec) -> None:
    """List the bundled models: shape, attention kinds and bytes per token at the serving dtype."""
    from kvplan import plan

    rows = plan.list_models()
    if json:
        from kvplan import schema

        write_json(schema.models(rows))
        return
    from kvplan.render import render_models

    render_models(rows, units.value)


@app.command()
def gpus(gpu_file: GpuFileOpt = None, json: JsonOpt = False, units: UnitsOpt = Units.iec) -> None:
    """List the GPU catalog: the capacity kvplan plans with, where that figure comes from, and aliases."""
    from kvplan.gpus import gpu_rows, load_catalog

    rows = gpu_rows(load_catalog(gpu_file or ()))
    if json:
        from kvplan import schema

        write_json(schema.gpus(rows))
        return
    from kvplan.render import render_gpus

    render_gpus(rows, units.value)
