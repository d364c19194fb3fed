"""The reference scenario (configs/scenarios/reference.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvplan.errors import CatalogFileError, OptionError, Param

if TYPE_CHECKING:
    pass

#: A context that still fits at 2^50 tokens (a petabyte per GPU at one byte per token) means the cache stopped
#: growing (state or windowed layers only): the largest context is "unbounded".


@dataclass(frozen=True)
class Scenario:
    """A named planning question shipped with kvplan: a model, a GPU, a context and a batch."""

    name: str
    description: str
    model: str
    gpu: str
    ctx: int
    batch: int
    #: Where it was read (``kvplan:configs/scenarios/<name>.yaml``).
    location: str


def load_scenario(name: str = "reference") -> Scenario:
    """A bundled scenario by name; ``reference`` is what ``pick-g`` plans when no model is given."""
    from typing import Annotated

    import yaml
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

    from kvplan.catalog import data_root

    class ScenarioFile(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        name: Annotated[str, Field(min_length=1)]
        description: Annotated[str, Field(min_length=1)]
        model: Annotated[str, Field(min_length=1)]
        gpu: Annotated[str, Field(min_length=1)]
        ctx: Annotated[StrictInt, Field(gt=0)]
        batch: Annotated[StrictInt, Field(gt=0)]

    where = f"kvplan:configs/scenarios/{name}.yaml"
    path = data_root().joinpath("scenarios", f"{name}.yaml")
    if not path.is_file():
        raise OptionError(Param.SCENARIO, f"no bundled scenario named {name!r}")
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
        parsed = ScenarioFile.model_validate(data)
    except yaml.YAMLError as err:
        raise CatalogFileError(where, [f"(file): not valid YAML: {err}"]) from err
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors(include_url=False)
        ]
        raise CatalogFileError(where, lines) from err
    return Scenario(**parsed.model_dump(), location=where)
