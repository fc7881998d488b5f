"""The MLP builder."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

log = logging.getLogger(__name__)


def hidden_widths(width: int | Sequence[int], depth: int) -> list[int]:
    """Expand ``width`` (an int or one int per hidden layer) to ``depth - 1`` hidden widths."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (1 = perceptron), got {depth!r}")
    entries = [width] if isinstance(width, int | float | str) else list(width)
    if not all(isinstance(w, int) and not isinstance(w, bool) for w in entries):
        raise ValueError(
            f"width must be an integer >= 1 or a list of them (one per hidden layer), got {width!r}"
        )
    if isinstance(width, int):
        widths = [width] * (depth - 1)
    else:
        widths = list(entries)
        if len(widths) != depth - 1:
            raise ValueError(
                f"width as a list needs one entry per hidden layer (depth - 1 = {depth - 1}), "
                f"got {len(widths)}: {list(width)}"
            )
    bad = [w for w in ([width] if isinstance(width, int) else widths) if w < 1]
    if bad:
        raise ValueError(f"width must be >= 1 for every hidden layer, got {width!r}")
    return widths


def checked_activation(act: object) -> nn.Module:
    """``act`` (one call of an activation config's partial) if it is an ``nn.Module``; else
    ``TypeError``: the one place this rule is checked."""
    if not isinstance(act, nn.Module):
        raise TypeError(
            f"activation must build an nn.Module, got {type(act).__name__}; "
            "is the config node missing `_partial_: true`?"
        )
    return act


class MLP(nn.Module):
    """A stack of ``depth`` Linear layers with an activation after every hidden one.

    Layers are numbered 1..depth from the input side: ``linears[i - 1]`` is Linear i and
    ``activations[i - 1]`` produces hidden layer i. An activation with a ``pool_size``
    attribute (Maxout) gets a Linear ``pool_size`` times wider before it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        depth: int,
        width: int | Sequence[int],
        activation: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        widths = hidden_widths(width, depth)
        self.depth = depth
        self.widths = widths
        self.linears = nn.ModuleList()
        self.activations = nn.ModuleList()
        fan_in = in_features
        for w in widths:
            act = checked_activation(activation())
            pool = pool_size(act)
            self.linears.append(nn.Linear(fan_in, w * pool))
            self.activations.append(act)
            fan_in = w
        self.linears.append(nn.Linear(fan_in, out_features))

    def forward(self, x: Tensor) -> Tensor:
        for linear, act in zip(self.linears, self.activations, strict=False):
            x = act(linear(x))
        return self.linears[-1](x)


class StackedLinear(nn.Module):
    """``M`` Linear layers of one shape as one: ``weight`` (M, out, in), ``bias`` (M, out).

    Input (M, B, in), or (B, in) shared by every member; output (M, B, out). One batched
    matrix product serves all members, so a stack pays the per-operation cost once.
    """

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        shapes = {tuple(lin.weight.shape) for lin in linears}
        if len(shapes) != 1:
            raise ValueError(f"stacked Linears must share one shape, got {sorted(shapes)}")
        self.in_features = linears[0].in_features
        self.out_features = linears[0].out_features
        self.weight = nn.Parameter(torch.stack([lin.weight.detach() for lin in linears]))
        self.bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in linears]))

    @property
    def members(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.shape[0] == 1:
            # A stack of one: the solo Linear's own kernel (addmm), faster on a CPU than a
            # batched product of one, and the solo run's numbers bit for bit. (squeeze, not
            # [0]: its backward is a view, where indexing's allocates a zero-filled copy.)
            x = x.squeeze(0) if x.dim() == 3 else x
            return F.linear(x, self.weight.squeeze(0), self.bias.squeeze(0)).unsqueeze(0)
        if x.dim() == 2:  # one input for every member
            return torch.matmul(x, self.weight.transpose(1, 2)) + self.bias.unsqueeze(1)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def pool_size(activation: nn.Module) -> int:
    """How many inputs ``activation`` pools into one output unit (1: elementwise)."""
    return int(getattr(activation, "pool_size", 1))


def rows_jacobian(
    activation: nn.Module, width_in: int, device: torch.device | str = "cpu"
) -> Tensor:
    """The exact Jacobian of ``activation`` at three random rows of ``width_in`` features,
    shaped (3, units, 3, width_in); raises ``ValueError`` unless it maps (n, k * units) to
    (n, units), with k its ``pool_size``."""
    pool = pool_size(activation)
    z = torch.randn(3, width_in, generator=torch.Generator().manual_seed(0)).to(device)
    jac = torch.autograd.functional.jacobian(lambda t: activation(t.clone()), z, vectorize=True)
    if jac.dim() != 4 or jac.shape[1] * pool != width_in:
        raise ValueError(
            f"{type(activation).__name__} maps inputs of shape {tuple(z.shape)} to "
            f"{tuple(jac.shape[:2])}; an activation must map (n, k*units) to (n, units), with "
            f"k its pool_size ({pool})"
        )
    return jac.detach()


def mixes_rows(jac: Tensor) -> bool:
    """Whether one row's output depends on another row's input, from ``rows_jacobian``."""
    rows = torch.eye(jac.shape[0], dtype=torch.bool, device=jac.device)
    return bool(((jac != 0) & ~rows[:, None, :, None]).any())


def activation_stack_refusal(activation: nn.Module, width_in: int) -> str | None:
    """Why ``activation`` cannot serve several members of a stack at once (None: it can).

    A stack hands it every member's rows in one batch (``apply_rows``; one with parameters
    or buffers, each member's rows with that member's copy: ``StackedActivation``), so it must
    draw no random numbers in training (one draw would serve every member, from the RNG state
    that the last member's seeding left), change no buffer of its own in training (running
    statistics: what a member's copy holds would depend on how the stack calls it) and never
    let one row's output depend on another row. Probed once on random rows of ``width_in``
    features, on the CPU, in train and eval mode, on a copy (the caller's module unchanged).
    """
    name = type(activation).__name__
    activation = copy.deepcopy(activation)
    try:
        with torch.random.fork_rng(devices=[]):
            activation.train()
            z = torch.randn(64, width_in, generator=torch.Generator().manual_seed(0))
            buffers = [b.clone() for b in activation.buffers()]
            with torch.no_grad():
                first, second = activation(z.clone()), activation(z.clone())
            changed = [
                not torch.equal(before, after)
                for before, after in zip(buffers, activation.buffers(), strict=True)
            ]
            if any(changed):
                return f"{name} changes buffers of its own in training (running statistics)"
            same = first.shape == second.shape and torch.allclose(
                first, second, rtol=0.0, atol=0.0, equal_nan=True
            )
            if not same:
                return f"{name} draws random numbers in training (two calls on one input differ)"
            for training in (True, False):
                activation.train(training)
                if mixes_rows(rows_jacobian(activation, width_in)):
                    return (
                        f"{name} mixes the samples of a batch (one sample's output depends on "
                        "another's input), and a stack's batch holds every member's samples"
                    )
    except Exception as err:  # an activation that fails on rows fails its own job, recorded
        return f"{name} could not be probed ({type(err).__name__}: {err})"
    return None


def has_state(activation: nn.Module) -> bool:
    """Whether ``activation`` holds parameters or buffers (one copy per member in a stack)."""
    return any(True for _ in activation.parameters()) or any(True for _ in activation.buffers())


class StackedActivation(nn.Module):
    """``M`` copies of one activation module that holds parameters or buffers, as one: each
    parameter and buffer stacked to (M, ...) under its own name (a stack's state dict keeps the
    solo module's keys), applied to each member's rows with that member's copy by
    ``torch.func.functional_call`` under ``torch.func.vmap`` over the member dimension.

    Input (M, B, F), or (M * B, F) rows (member-major, as ``apply_rows`` flattens them), or
    (B, F) for a stack of one; output likewise. An activation that vmap cannot take (found
    on a probe at construction) is applied member by member instead. ``member(m)`` is member
    m's own module, for what reads one network's activation (the theory, the gain).
    """

    def __init__(self, activations: Sequence[nn.Module], width_in: int) -> None:
        super().__init__()
        first = activations[0]
        self.pool_size = pool_size(first)
        self.n_members = len(activations)
        # The module that functional_call runs with each member's tensors swapped in; not a
        # registered child, so its own tensors are neither trained nor saved.
        self.__dict__["template"] = copy.deepcopy(first)
        shell = copy.deepcopy(first)
        for name, child in shell.named_children():
            self.add_module(name, child)
        stacked = {
            kind: {
                name: torch.stack([dict(getattr(a, f"named_{kind}")())[name] for a in activations])
                for name, _ in getattr(first, f"named_{kind}")()
            }
            for kind in ("parameters", "buffers")
        }
        for name, tensor in stacked["parameters"].items():
            owner, attr = self._owner(name)
            grad = first.get_parameter(name).requires_grad
            owner.register_parameter(attr, nn.Parameter(tensor.detach(), requires_grad=grad))
        for name, tensor in stacked["buffers"].items():
            owner, attr = self._owner(name)
            owner.register_buffer(attr, tensor.detach().clone())
        self.vectorised = self.n_members == 1 or self._vmap_works(width_in)

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        path, _, attr = name.rpartition(".")
        return (self.get_submodule(path) if path else self), attr

    def _state(self) -> dict[str, Tensor]:
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    def _vmap_works(self, width_in: int) -> bool:
        z = torch.randn(self.n_members, 2, width_in, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                self._vmapped(self._state(), z.to(next(iter(self._state().values())).device))
        except Exception as err:  # vmap takes most modules; the rest run member by member
            log.info("%s runs member by member in a stack: %s", type(self.template).__name__, err)
            return False
        return True

    def member_state(self) -> dict[str, Tensor]:
        """Every parameter and buffer by name, each (M, ...): one copy per member."""
        return self._state()

    def apply_one(self, state: dict[str, Tensor], rows: Tensor) -> Tensor:
        """The activation on one member's ``rows`` with that member's ``state`` (its slice of
        ``member_state``): what the stack maps over its members."""
        return functional_call(self.template, state, (rows,))

    def _vmapped(self, state: dict[str, Tensor], z: Tensor) -> Tensor:
        return vmap(self.apply_one)(state, z)

    def forward(self, z: Tensor) -> Tensor:
        state = self._state()
        if self.n_members == 1 and z.dim() == 2:  # the solo network's rows, as it runs them
            return self.apply_one({k: v.squeeze(0) for k, v in state.items()}, z)
        rows = z.dim() == 2
        x = z.reshape(self.n_members, -1, z.shape[-1]) if rows else z
        if self.vectorised:
            out = self._vmapped(state, x)
        else:
            out = torch.stack(
                [
                    self.apply_one({k: v[m] for k, v in state.items()}, x[m])
                    for m in range(self.n_members)
                ]
            )
        return out.reshape(z.shape[0], -1) if rows else out

    def member(self, m: int) -> nn.Module:
        """Member ``m``'s activation as a module of its own (a detached copy)."""
        module = copy.deepcopy(self.template)
        module.train(self.training)
        with torch.no_grad():
            for name, tensor in self._state().items():
                path, _, attr = name.rpartition(".")
                owner = module.get_submodule(path) if path else module
                if isinstance(getattr(owner, attr), nn.Parameter):
                    owner.register_parameter(attr, nn.Parameter(tensor[m].clone()))
                else:
                    owner.register_buffer(attr, tensor[m].clone())
        return module

    def train(self, mode: bool = True) -> StackedActivation:
        self.template.train(mode)
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # Moves (device, dtype) reach the template too: tensors it holds as plain attributes.
        self.template._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"members={self.n_members}, activation={type(self.template).__name__}"


def apply_rows(activation: nn.Module, z: Tensor) -> Tensor:
    """``activation`` on (M, B, F) pre-activations as on the (M * B, F) rows it was written
    for: an activation sees the 2-D (samples, units) input of a plain MLP, whatever it does
    with its dimensions (a ``StackedActivation`` sees each member's (B, F) rows)."""
    if isinstance(activation, StackedActivation):
        return activation(z)
    return activation(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], -1)


class StackedMLP(nn.Module):
    """``M`` MLPs of one architecture (members) trained as one model with a leading member
    dimension; a single network is a stack of one.

    Built from ordinary ``MLP`` members (each initialised as its solo job would be), whose
    weights it copies into ``StackedLinear`` layers numbered as in ``MLP``. An activation
    without parameters or buffers is the first member's module, shared; one with them is a
    ``StackedActivation`` holding each member's copy (in a stack of one too, so that every
    checkpoint has the member dimension first). ``forward`` maps (M, B, in) or (B, in) to
    (M, B, out).
    """

    def __init__(self, members: Sequence[MLP]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a stack needs at least one member")
        first = members[0]
        for other in members[1:]:
            if other.widths != first.widths or other.depth != first.depth:
                raise ValueError(
                    f"stack members must share depth and widths, got {first.depth} "
                    f"x {first.widths} and {other.depth} x {other.widths}"
                )
        self.depth = first.depth
        self.widths = first.widths
        self.members = len(members)
        self.linears = nn.ModuleList(
            StackedLinear([m.linears[i] for m in members]) for i in range(len(first.linears))
        )
        self.activations = nn.ModuleList(
            StackedActivation([m.activations[i] for m in members], linear.out_features)
            if has_state(act)
            else act
            for i, (act, linear) in enumerate(zip(first.activations, first.linears, strict=False))
        )

    def member_activations(self, m: int) -> list[nn.Module]:
        """Member ``m``'s activation of every hidden layer as a module of its own."""
        return [
            act.member(m) if isinstance(act, StackedActivation) else act for act in self.activations
        ]

    def forward(self, x: Tensor) -> Tensor:
        if self.members == 1:
            # A stack of one runs as the solo MLP does, on 2-D activations: no per-layer
            # reshaping of the member axis on a path that small networks take every step.
            # (Through each Linear's __call__: hooks such as torch's pruning mask must run.)
            h = x.squeeze(0) if x.dim() == 3 else x
            for linear, act in zip(self.linears, self.activations, strict=False):
                h = act(linear(h).squeeze(0))
            return self.linears[-1](h)
        for linear, act in zip(self.linears, self.activations, strict=False):
            x = apply_rows(act, linear(x))
        return self.linears[-1](x)
