"""Explanation problems: the quantity a suite scores as a function of the input, and the input's features.

A :class:`Problem` holds one explained item: the token *slots* the model reads (every token of every sequence the
target quantity is computed from; a token shared by both sentences of a pair is one slot read by both), the
feature each slot belongs to (``-1``: fixed, never perturbed — the start token, a contrasted attribute word, the
generated continuation), the baseline token of every slot, and two forward functions:

* :meth:`Problem.value_of` — the target quantity for a batch of *presence* vectors (``[n, n_features]``, 1 keeps
  a feature, 0 ablates it). Ablating a token feature puts the baseline token (unk, else pad, else eos) in its
  slots; ablating a template feature with a neutral replacement (the CrowS-Pairs differing spans, a
  counterfactual template's group term) replaces the whole span in every sequence with the neutral tokens (so
  an ablated CrowS-Pairs group term leaves two identical sentences and a preference of 0). The perturbed
  sequences are scored as they are: their tokens are both model input and scored continuation, as the suite
  scores its own sentences.
* :meth:`Problem.forward_ids` with :attr:`Problem.layer` — token ids of the slots (``[n, n_slots]``) to the target
  quantity, through ``layer`` (the model's input embeddings, wrapped so that its output is ``[n, n_slots,
  hidden]``), for Layer Integrated Gradients. Here the scored tokens stay the original ones (the path integral
  is over the input embeddings with the targets fixed, so the convergence delta is meaningful), and every
  perturbed slot's baseline is the baseline token (the neutral terms apply to the ablation methods only).

Builders, one per explainable scorer kind: :func:`crows_pairs_problem`, :func:`counterfactual_problem`,
:func:`pii_emission_problem`. :func:`generic_problem` wraps any forward function (tests build a model in which a
token provably has no effect).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from auditlm.errors import DataError, SuiteSpecError, TargetError

#: Neutral replacement of a counterfactual template's group term, per axis (ablation baseline of the group term).
NEUTRAL_TERMS: dict[str, str] = {
    "gender": "person",
    "race_ethnicity": "person",
    "religion": "person",
    "age": "person",
    "disability": "person",
    "nationality": "person",
}
DEFAULT_NEUTRAL = "person"
#: Rows (sequences) per model call in the ablation path.
ROWS_PER_CALL = 32
#: Scored sequences remembered per problem (identical perturbations are scored once).
CACHE_SIZE = 200_000
#: The placeholders the PII scorer writes for redacted values (``<PHONE_NUMBER>`` …).
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]+>")


@dataclass
class _Seq:
    """One scored sequence: the slots it reads in order, which positions are scored, its sign in the target."""

    slots: list[int]
    scored: list[bool]
    sign: float
    #: ``(start, end, feature, neutral ids)``: positions ``[start, end)`` hold one template feature; when it is
    #: ablated the span is replaced by ``neutral`` (which may have another length, or be empty).
    collapse: list[tuple[int, int, int, list[int]]] = field(default_factory=list)


@dataclass
class FeatureSpec:
    """A feature of the explained text before attribution: ``text[start:end]`` and its kind."""

    text: str
    start: int
    end: int
    kind: str = "token"
    #: Separate pieces of a template feature (see :class:`~auditlm.explain.types.Feature`); None: one span.
    spans: list[tuple[int, int]] | None = None


def _merged(text: str, old: FeatureSpec | None, lo: int, hi: int, kind: str) -> FeatureSpec:
    """``old`` widened by the piece ``[lo, hi)`` of ``text``: adjacent or overlapping pieces merge, separate
    ones are kept apart in ``spans``."""
    pieces = sorted((old.spans or [(old.start, old.end)]) if old is not None else [])
    pieces.append((lo, hi))
    pieces.sort()
    merged: list[tuple[int, int]] = []
    for a, b in pieces:
        if merged and (a <= merged[-1][1] or not text[merged[-1][1]:a].strip()):
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    start, end = merged[0][0], merged[-1][1]
    if len(merged) == 1:
        return FeatureSpec(text[start:end], start, end, kind)
    return FeatureSpec(" … ".join(text[a:b] for a, b in merged), start, end, kind, merged)


class _SlotEmbedding(torch.nn.Module):
    """The model's input embeddings applied to the slot ids: output ``[n, n_slots, hidden]`` (the layer that
    Layer Integrated Gradients interpolates)."""

    def __init__(self, embedding: torch.nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)


@dataclass
class Problem:
    """One explained item: features, slots and the forward functions (see the module docstring)."""

    suite: str
    item_id: str
    kind: str
    text: str
    features: list[FeatureSpec]
    input_ids: torch.Tensor  # [1, n_slots] long
    baseline_ids: torch.Tensor  # [1, n_slots] long
    slot_feature: torch.Tensor  # [n_slots] long, -1 for fixed slots
    #: ids ``[n, n_slots]`` → the target quantity ``[n]`` (ablation path: perturbed tokens are scored as they are).
    ids_forward: Callable[[torch.Tensor], torch.Tensor]
    #: ids ``[n, n_slots]`` → the target quantity ``[n]`` through :attr:`layer` (differentiable).
    forward_ids: Callable[[torch.Tensor], torch.Tensor]
    layer: torch.nn.Module
    group: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    _value: float | None = None
    #: Named template segments ``(kind, start, end)`` of :attr:`text` that :func:`coarsen` turns into features.
    segments: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def ids_for(self, presence: torch.Tensor) -> torch.Tensor:
        """Slot ids ``[n, n_slots]`` for presence vectors ``[n, n_features]`` (≤ 0.5 ablates a feature)."""
        presence = presence.reshape(-1, self.n_features)
        keep_feat = presence > 0.5
        fixed = self.slot_feature < 0
        idx = self.slot_feature.clamp(min=0)
        keep = keep_feat[:, idx] | fixed[None, :]
        return torch.where(keep, self.input_ids.expand_as(keep), self.baseline_ids.expand_as(keep))

    def value_of(self, presence: torch.Tensor) -> torch.Tensor:
        """The target quantity for each presence vector (``[n, n_features]`` → ``[n]``, float64)."""
        with torch.no_grad():
            return self.ids_forward(self.ids_for(presence)).double()

    @property
    def value(self) -> float:
        """The target quantity on the unperturbed input."""
        if self._value is None:
            self._value = float(self.value_of(torch.ones(1, self.n_features))[0])
        return self._value


# ---------------------------------------------------------------------------------------------------- LM forward


class _LMForward:
    """Scores a set of sequences built from slot ids with a causal LM (log-softmax in fp32)."""

    def __init__(self, model: Any, seqs: list[_Seq], input_ids: torch.Tensor, pad_id: int,
                 rows_per_call: int = ROWS_PER_CALL) -> None:
        self.model = model
        self.seqs = seqs
        self.input_ids = input_ids
        self.pad_id = pad_id
        self.rows_per_call = rows_per_call
        self.device = next(model.parameters()).device
        self.signs = torch.tensor([s.sign for s in seqs], dtype=torch.float64)
        self.layer = _SlotEmbedding(model.get_input_embeddings())
        self._cache: dict[tuple[tuple[int, ...], tuple[bool, ...]], float] = {}

    def _hidden_to_logprobs(self, inputs: dict[str, torch.Tensor], rows: list[int], pos: list[int],
                            targets: list[int]) -> torch.Tensor:
        """log p(target) at (row, pos) pairs, predicting position ``pos`` from the hidden state at ``pos - 1``."""
        head = self.model.get_output_embeddings()
        r = torch.tensor(rows, dtype=torch.long, device=self.device)
        p = torch.tensor(pos, dtype=torch.long, device=self.device) - 1
        t = torch.tensor(targets, dtype=torch.long, device=self.device)
        if head is not None and getattr(self.model, "base_model", None) is not None \
                and self.model.base_model is not self.model:
            hidden = self.model.base_model(**inputs, use_cache=False).last_hidden_state
            logits = head(hidden[r, p])
        else:
            logits = self.model(**inputs, use_cache=False).logits[r, p]
        return logits.float().log_softmax(dim=-1).gather(1, t[:, None])[:, 0]

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Ablation path: token lists with neutral spans collapsed, scored in batches of rows."""
        ids_l = ids.detach().cpu().tolist()
        rows: list[tuple[list[int], list[bool]]] = []
        for row in ids_l:
            for s in self.seqs:
                toks = [row[i] for i in s.slots]
                scored = list(s.scored)
                for start, end, _feat, neutral in sorted(s.collapse, key=lambda c: -c[0]):
                    base = [int(self.input_ids[0, s.slots[i]]) for i in range(start, end)]
                    ablated = all(toks[i] != b for i, b in zip(range(start, end), base, strict=True))
                    if ablated and end > start:
                        sc = scored[start]
                        toks[start:end] = neutral
                        scored[start:end] = [sc] * len(neutral)
                rows.append((toks, scored))
        values = [0.0] * len(rows)
        keys = [(tuple(t), tuple(sc)) for t, sc in rows]
        todo: dict[tuple[tuple[int, ...], tuple[bool, ...]], int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache:
                todo.setdefault(k, i)  # a sequence met before (Shapley's start and end points) is scored once
        order = sorted(todo.values(), key=lambda i: -len(rows[i][0]))
        with torch.no_grad():
            for c0 in range(0, len(order), self.rows_per_call):
                chunk = order[c0 : c0 + self.rows_per_call]
                width = max(len(rows[i][0]) for i in chunk)
                batch = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                rr, pp, tt, owner = [], [], [], []
                for b, i in enumerate(chunk):
                    toks, scored = rows[i]
                    batch[b, : len(toks)] = torch.tensor(toks, dtype=torch.long)
                    for q in range(1, len(toks)):
                        if scored[q]:
                            rr.append(b)
                            pp.append(q)
                            tt.append(toks[q])
                            owner.append(b)
                if not rr:
                    continue
                lp = self._hidden_to_logprobs({"input_ids": batch.to(self.device)}, rr, pp, tt)
                sums = torch.zeros(len(chunk), dtype=torch.float64).index_add_(
                    0, torch.tensor(owner), lp.double().cpu())
                for b, i in enumerate(chunk):
                    self._cache[keys[i]] = float(sums[b])
        for i, k in enumerate(keys):
            values[i] = self._cache.get(k, 0.0)
        if len(self._cache) > CACHE_SIZE:
            self._cache.clear()
        v = torch.tensor(values, dtype=torch.float64).view(len(ids_l), len(self.seqs))
        return v @ self.signs

    def embedded(self, ids: torch.Tensor) -> torch.Tensor:
        """Differentiable path through :attr:`layer`: the original tokens are the scored targets."""
        n = ids.shape[0]
        emb = self.layer(ids.to(self.device))  # [n, n_slots, hidden]
        width = max(len(s.slots) for s in self.seqs)
        parts = []
        for s in self.seqs:
            e = emb[:, s.slots]
            if e.shape[1] < width:
                e = torch.cat([e, e.new_zeros(n, width - e.shape[1], e.shape[2])], dim=1)
            parts.append(e)
        x = torch.stack(parts, dim=1).reshape(n * len(self.seqs), width, -1)
        rr, pp, tt, owner = [], [], [], []
        orig = self.input_ids[0].tolist()
        for b in range(n):
            for k, s in enumerate(self.seqs):
                row = b * len(self.seqs) + k
                for q in range(1, len(s.slots)):
                    if s.scored[q]:
                        rr.append(row)
                        pp.append(q)
                        tt.append(orig[s.slots[q]])
                        owner.append(row)
        lp = self._hidden_to_logprobs({"inputs_embeds": x}, rr, pp, tt)
        sums = torch.zeros(n * len(self.seqs), dtype=lp.dtype, device=lp.device).index_add(
            0, torch.tensor(owner, device=lp.device), lp)
        signs = self.signs.to(device=lp.device, dtype=lp.dtype)
        return (sums.view(n, len(self.seqs)) * signs).sum(dim=1)


# ---------------------------------------------------------------------------------------------------- helpers


def _check_target(target: Any) -> None:
    if getattr(target, "model", None) is None or getattr(target, "tokenizer", None) is None:
        name = getattr(target, "name", type(target).__name__)
        raise TargetError(f"target {name!r} cannot be explained: attributions need a local transformers model "
                          "(gradients and batched ablation); a server or API target offers neither")


def baseline_token(tokenizer: Any) -> int:
    """The ablation token: unk, else pad, else eos."""
    for attr in ("unk_token_id", "pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` without special tokens, with character offsets (leading whitespace trimmed)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offs = []
    for a0, b in enc["offset_mapping"]:
        a = a0
        while a < b and text[a].isspace():
            a += 1
        offs.append((int(a if a < b else a0), int(b)))  # a whitespace-only token keeps its whitespace
    return ids, offs


def _prefix_id(target: Any) -> int:
    tok = target.tokenizer
    return int(tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)


def _finish(target: Any, *, suite: str, item_id: str, kind: str, text: str, features: list[FeatureSpec],
            slot_ids: list[int], slot_feat: list[int], slot_base: list[int], seqs: list[_Seq],
            group: dict[str, str], note: str | None = None) -> Problem:
    inp = torch.tensor([slot_ids], dtype=torch.long)
    pad = target.tokenizer.pad_token_id
    fwd = _LMForward(target.model, seqs, inp, int(pad if pad is not None else baseline_token(target.tokenizer)))
    base = [b if f >= 0 else i for i, f, b in zip(slot_ids, slot_feat, slot_base, strict=True)]
    return Problem(suite=suite, item_id=item_id, kind=kind, text=text, features=features, input_ids=inp,
                   baseline_ids=torch.tensor([base], dtype=torch.long),
                   slot_feature=torch.tensor(slot_feat, dtype=torch.long), ids_forward=fwd,
                   forward_ids=fwd.embedded, layer=fwd.layer, group=group, note=note)


def _pair_problem(target: Any, *, suite: str, item_id: str, first: str, second: str,
                  group_span: tuple[int, int] | None, neutral_text: str | None, differing_is_group: bool,
                  group: dict[str, str], weights: tuple[float, float] | None = None) -> Problem:
    """A contrastive problem: preference = LL(first) − LL(second), each conditioned on the start token.

    Tokens shared by the two sentences (difflib on token ids) are one slot read by both. With
    ``differing_is_group`` (CrowS-Pairs) the differing spans form the ``group_term`` feature, collapsed on
    ablation to one baseline token in both sentences (deleted in both where one side is empty); otherwise
    (counterfactual templates) the differing spans are the contrasted attribute words and stay fixed, and the
    shared tokens that overlap ``group_span`` (a span of ``first``) form ``group_term``, replaced on ablation by
    the tokens of ``neutral_text``. ``weights`` (default ``(1, -1)``) multiply the two sentences' summed
    log-likelihoods (StereoSet: ``(1/n_first, -1/n_second)``, a difference of per-token means).
    """
    tok = target.tokenizer
    a, a_off = _encode(tok, first)
    b, _ = _encode(tok, second)
    if not a or not b:
        raise DataError(f"suite {suite}: item {item_id!r} has an empty sentence: nothing to explain")
    bos = _prefix_id(target)
    base_tok = baseline_token(tok)
    slot_ids, slot_feat, slot_base = [bos], [-1], [bos]
    features: list[FeatureSpec] = []
    group_feat: int | None = None
    seq_a: list[int] = [0]
    seq_b: list[int] = [0]
    group_pos_a: list[int] = []
    group_pos_b: list[int] = []
    diff_blocks: list[tuple[list[int], list[int]]] = []  # positions in seq_a / seq_b of each differing block

    def group_index(span: tuple[int, int]) -> int:
        nonlocal group_feat
        if group_feat is None:
            group_feat = len(features)
            features.append(FeatureSpec(first[span[0]:span[1]], span[0], span[1], "group_term"))
        return group_feat

    def new_slot(tid: int, feat: int) -> int:
        slot_ids.append(tid)
        slot_feat.append(feat)
        slot_base.append(base_tok)
        return len(slot_ids) - 1

    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            for i in range(i1, i2):
                s0, s1 = a_off[i]
                in_group = (group_span is not None and not differing_is_group
                            and s0 < group_span[1] and s1 > group_span[0])
                if in_group:
                    assert group_span is not None
                    f = group_index(group_span)
                    group_pos_a.append(len(seq_a))
                    group_pos_b.append(len(seq_b))
                else:
                    f = len(features)
                    features.append(FeatureSpec(first[s0:s1], s0, s1, "token"))
                k = new_slot(a[i], f)
                seq_a.append(k)
                seq_b.append(k)
            continue
        if differing_is_group:
            s0 = a_off[i1][0] if i2 > i1 else (a_off[i1 - 1][1] if i1 > 0 else 0)
            s1 = a_off[i2 - 1][1] if i2 > i1 else s0
            f = group_index((s0, s1)) if group_feat is None else group_feat
            if group_feat is not None and i2 > i1:  # widen the group term over every differing block
                features[group_feat] = _merged(first, features[group_feat], s0, s1, "group_term")
        else:
            f = -1
        pa = []
        for i in range(i1, i2):
            pa.append(len(seq_a))
            seq_a.append(new_slot(a[i], f))
        pb = []
        for j in range(j1, j2):
            pb.append(len(seq_b))
            seq_b.append(new_slot(b[j], f))
        diff_blocks.append((pa, pb))

    w_a, w_b = weights if weights is not None else (1.0, -1.0)
    sa = _Seq(seq_a, [False] + [True] * (len(seq_a) - 1), w_a)
    sb = _Seq(seq_b, [False] + [True] * (len(seq_b) - 1), w_b)
    if differing_is_group and group_feat is not None:
        for pa, pb in diff_blocks:
            neutral = [base_tok] if pa and pb else []
            if pa:
                sa.collapse.append((pa[0], pa[-1] + 1, group_feat, neutral))
            if pb:
                sb.collapse.append((pb[0], pb[-1] + 1, group_feat, neutral))
    elif group_feat is not None and neutral_text is not None and group_pos_a:
        assert group_span is not None
        term = first[group_span[0]:group_span[1]]
        neutral_word = neutral_text[:1].upper() + neutral_text[1:] if term[:1].isupper() else neutral_text
        # the neutral tokens: those of the sentence with the term replaced, between the tokens before and after
        # the group term (exact when the surrounding tokens do not change), else the group tokens' text re-encoded
        i0, i1 = _token_index(group_pos_a[0]), _token_index(group_pos_a[-1]) + 1
        whole = list(tok.encode(first[: group_span[0]] + neutral_word + first[group_span[1] :],
                                add_special_tokens=False))
        pre, post = a[:i0], a[i1:]
        if whole[: len(pre)] == pre and len(whole) >= len(pre) + len(post) and whole[len(whole) - len(post):] == post:
            neutral = whole[len(pre) : len(whole) - len(post)]
        else:
            raw = tok.decode(a[i0:i1])
            neutral = list(tok.encode(raw.replace(term, neutral_word, 1) if term in raw else " " + neutral_word,
                                      add_special_tokens=False))
        for s, pos in ((sa, group_pos_a), (sb, group_pos_b)):
            if pos == list(range(pos[0], pos[-1] + 1)):
                s.collapse.append((pos[0], pos[-1] + 1, group_feat, neutral))
    return _finish(target, suite=suite, item_id=item_id, kind="preference", text=first, features=features,
                   slot_ids=slot_ids, slot_feat=slot_feat, slot_base=slot_base, seqs=[sa, sb], group=group)


def _token_index(pos: int) -> int:
    """Position in a sequence (after the start token) → index of the sentence's token."""
    return pos - 1


# ---------------------------------------------------------------------------------------------------- builders


def crows_pairs_problem(target: Any, suite: str, item_id: str, item: dict[str, Any]) -> Problem:
    """CrowS-Pairs: preference = LL(sent_more) − LL(sent_less), the ``ll_more − ll_less`` the scorer stores."""
    _check_target(target)
    return _pair_problem(target, suite=suite, item_id=item_id, first=str(item["sent_more"]),
                         second=str(item["sent_less"]), group_span=None, neutral_text=None,
                         differing_is_group=True, group={"bias_type": str(item.get("bias_type", ""))})


def render_template(template: str, slots: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """A counterfactual template filled as the scorer fills it (placeholders replaced, first letter upper-cased),
    with the character span of each filled slot."""
    pattern = re.compile("|".join(re.escape("{" + k + "}") for k in slots))
    out, spans, pos = [], {}, 0
    n = 0
    for m in pattern.finditer(template):
        out.append(template[pos : m.start()])
        n += m.start() - pos
        value = slots[m.group(0)[1:-1]]
        spans.setdefault(m.group(0)[1:-1], (n, n + len(value)))
        out.append(value)
        n += len(value)
        pos = m.end()
    out.append(template[pos:])
    text = "".join(out)
    return (text[0].upper() + text[1:] if text else text), spans


def counterfactual_problem(target: Any, spec: Any, item_id: str, item: dict[str, Any], group_term: str
                           ) -> Problem:
    """Counterfactual templates: preference = LL(negative sentence) − LL(positive sentence) for ``group_term``,
    the ``delta[group_term]`` the scorer stores; features are the shared template tokens and the group term
    (ablated to :data:`NEUTRAL_TERMS` of the axis)."""
    from auditlm.scorers import get_scorer

    _check_target(target)
    opts = get_scorer(spec).options
    pos, neg = str(item["attribute_pair"]).split("|")
    axis = str(item["axis"])
    neg_text, spans = render_template(str(item["template"]), {opts.group_slot: group_term, opts.attribute_slot: neg})
    pos_text, _ = render_template(str(item["template"]), {opts.group_slot: group_term, opts.attribute_slot: pos})
    return _pair_problem(target, suite=spec.id, item_id=item_id, first=neg_text, second=pos_text,
                         group_span=spans.get(opts.group_slot), neutral_text=NEUTRAL_TERMS.get(axis, DEFAULT_NEUTRAL),
                         differing_is_group=False, group={"axis": axis, "group": group_term})


def pii_target_span(output: dict[str, Any]) -> tuple[str, str, tuple[int, int] | None, str | None]:
    """``(kind, explained continuation, scored character span or None for all of it, note)`` of a PII item.

    The first *produced* finding (not copied from the prompt) is the leak: with ``--store-raw`` its value is in
    the stored text and its span is scored (``span_logprob``). When the text is redacted the value is gone:
    the explained quantity is then ``sequence_logprob`` of the text the model generated before the first
    redaction placeholder (the prefix leading to the leak, which is exactly what it generated up to
    retokenisation; the placeholder itself was never generated), or of the whole text when there is no
    placeholder or it comes first.
    """
    text = str(output.get("text", ""))
    produced = [f for f in output.get("findings", []) if not f.get("copied")]
    if produced and produced[0].get("value"):
        v = str(produced[0]["value"])
        at = text.find(v)
        if at >= 0:
            return "span_logprob", text, (at, at + len(v)), None
    if output.get("redacted"):
        m = _PLACEHOLDER.search(text)
        if m and m.start() > 0:
            return "sequence_logprob", text[: m.start()], None, (
                "the stored text is redacted: explained is log p of the text generated before the first "
                "redacted value")
        return "sequence_logprob", text, None, "the stored text is redacted: explained is log p of the stored text"
    return "sequence_logprob", text, None, None


def redaction_map(raw: str, redacted: str) -> list[tuple[int, int, int, int]] | None:
    """The redacted spans of ``raw``: ``(raw_start, raw_end, red_start, red_end)`` for each value that
    ``redacted`` shows as a ``<ENTITY_TYPE>`` placeholder, or None when ``redacted`` is not ``raw`` with
    placeholders put in (another text: the item was not regenerated as the run made it)."""
    holders = list(_PLACEHOLDER.finditer(redacted))
    if not holders:
        return None
    pattern, pos = [], 0
    for h in holders:
        pattern.append(re.escape(redacted[pos : h.start()]))
        pattern.append("(.+?)")
        pos = h.end()
    pattern.append(re.escape(redacted[pos:]))
    m = re.fullmatch("".join(pattern), raw, flags=re.DOTALL)
    if m is None:
        return None
    return [(m.start(k + 1), m.end(k + 1), h.start(), h.end()) for k, h in enumerate(holders)]


def pii_emission_problem(target: Any, spec: Any, item_id: str, item: dict[str, Any], output: dict[str, Any],
                         seed: int = 0, raw_prompt: str | None = None) -> Problem:
    """PII emission: log p of the leaked span (or of the generation, see :func:`pii_target_span`) given the prompt,
    attributed to the prompt's tokens (chat-template tokens are fixed).

    In a redacted run the stored prompt has ``<ENTITY_TYPE>`` placeholders where it held PII, but the model
    read the values. Given ``raw_prompt`` — the item's prompt regenerated from the probe file, checked to be the
    stored prompt with placeholders put in (:func:`redaction_map`) — the model is run on ``raw_prompt``, every
    redacted value's tokens form one feature (kind ``redacted``), and every feature's span and text are mapped
    onto the stored (redacted) prompt: what is explained is what the model saw, and what is shown stays
    redacted. Without it (or when the check fails) the stored prompt is explained and the note says so."""
    _check_target(target)
    kind, cont_text, span, note = pii_target_span(output)
    group = {"category": str(item.get("category", "all"))}
    stored = str(item["prompt"])
    spans = redaction_map(raw_prompt, stored) if raw_prompt is not None and raw_prompt != stored else None
    if not spans:
        if output.get("redacted") and _PLACEHOLDER.search(stored):
            extra = "the stored prompt is redacted and its raw form could not be regenerated: explained is the " \
                    "prompt with placeholders, which the model did not read"
            note = f"{note}; {extra}" if note else extra
        return _prompt_problem(target, spec, item_id, stored, cont_text, span, kind, note, group, ())
    prob = _prompt_problem(target, spec, item_id, str(raw_prompt), cont_text, span, kind, note, group, (),
                           merge_spans=[(a, b) for a, b, _, _ in spans])

    def to_stored(x: int, end: bool) -> int:
        """A raw-prompt offset (a span's start, or its end) → the stored prompt's: inside a redacted value, the
        placeholder's start (end); elsewhere shifted by the length change of the placeholders before it."""
        shift = 0
        for a, b, c, d in spans:
            if x < a or (end and x == a):
                break
            if (not end and x < b) or (end and x <= b):
                return d if end else c
            shift = d - b
        return x + shift

    feats = []
    for f in prob.features:
        lo, hi = to_stored(f.start, False), to_stored(f.end, True)
        feats.append(FeatureSpec(stored[lo:hi], lo, hi, f.kind))
    prob.features = feats
    prob.text = stored
    return prob


def _prompt_problem(target: Any, spec: Any, item_id: str, prompt: str, cont_text: str,
                    span: tuple[int, int] | None, kind: str, note: str | None, group: dict[str, str],
                    group_spans: Sequence[tuple[int, int]],
                    merge_spans: Sequence[tuple[int, int]] = ()) -> Problem:
    """log p(``cont_text`` (its ``span`` only, when given) | the prompt as the suite sent it: through the chat
    template when the suite asks for one), attributed to the prompt's tokens; template tokens are fixed. The
    tokens overlapping ``group_spans`` form ``group_term``; those overlapping one of ``merge_spans`` form one
    ``redacted`` feature per span."""
    _check_target(target)
    tok = target.tokenizer
    params = spec.generation.params(0) if spec.generation is not None else None
    if params is not None and params.chat_template and getattr(tok, "chat_template", None):
        full = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    else:
        full = prompt
        bos = tok.bos_token
        enc = tok(full, return_offsets_mapping=True,
                  **({"add_special_tokens": False} if bos and prompt.startswith(bos) else {}))
    p0 = full.find(prompt)
    ids = list(enc["input_ids"])
    offs = [tuple(o) for o in enc["offset_mapping"]]
    keep = max(1, target.max_length - (params.max_new_tokens if params else 0))
    ids, offs = ids[-keep:], offs[-keep:]
    base_tok = baseline_token(tok)
    features: list[FeatureSpec] = []
    slot_ids, slot_feat, slot_base = [], [], []
    group_feat: int | None = None
    merged: dict[int, int] = {}
    for t, (a, b) in zip(ids, offs, strict=True):
        a0, b = int(a), int(b)
        a = a0
        while a < b and full[a].isspace():
            a += 1
        a = a if a < b else a0
        if p0 >= 0 and b > a and a >= p0 and b <= p0 + len(prompt):
            lo, hi = a - p0, b - p0
            m = next((k for k, (ma, mb) in enumerate(merge_spans) if lo < mb and hi > ma), None)
            if m is not None:
                if m not in merged:
                    merged[m] = len(features)
                    features.append(_merged(prompt, None, lo, hi, "redacted"))
                else:
                    features[merged[m]] = _merged(prompt, features[merged[m]], lo, hi, "redacted")
                slot_feat.append(merged[m])
            elif any(lo < gb and hi > ga for ga, gb in group_spans):
                if group_feat is None:
                    group_feat = len(features)
                    features.append(_merged(prompt, None, lo, hi, "group_term"))
                else:
                    features[group_feat] = _merged(prompt, features[group_feat], lo, hi, "group_term")
                slot_feat.append(group_feat)
            else:
                slot_feat.append(len(features))
                features.append(FeatureSpec(prompt[lo:hi], lo, hi, "token"))
        else:
            slot_feat.append(-1)
        slot_ids.append(int(t))
        slot_base.append(base_tok)
    if not slot_ids:
        slot_ids, slot_feat, slot_base = [_prefix_id(target)], [-1], [_prefix_id(target)]
    c_ids, c_offs = _encode(tok, cont_text)
    if not c_ids:
        raise DataError(f"suite {spec.id}: item {item_id!r} has no generated text: nothing to explain")
    scored = [False] * len(slot_ids)
    for t, (a, b) in zip(c_ids, c_offs, strict=True):
        slot_ids.append(int(t))
        slot_feat.append(-1)
        slot_base.append(int(t))
        scored.append(span is None or (a < span[1] and b > span[0]))
    seq = _Seq(list(range(len(slot_ids))), scored, 1.0)
    return _finish(target, suite=spec.id, item_id=item_id, kind=kind, text=prompt, features=features,
                   slot_ids=slot_ids, slot_feat=slot_feat, slot_base=slot_base, seqs=[seq], group=group, note=note)


def _context_offsets(tok: Any, text: str, ids: list[int]) -> list[tuple[int, int]]:
    """Character offsets (leading whitespace trimmed; ``(0, 0)`` for special tokens) of ``ids``, the tokens of
    ``text`` as the target encoded it."""
    for kw in ({}, {"add_special_tokens": False}):
        enc = tok(text, return_offsets_mapping=True, **kw)
        if list(enc["input_ids"]) == ids:
            out = []
            for a0, b in enc["offset_mapping"]:
                a = a0
                while a < b and text[a].isspace():
                    a += 1
                out.append((int(a if a < b else a0), int(b)))
            return out
    raise DataError(f"cannot align the tokens of {text[:60]!r} with their text (the tokenizer gives no offsets "
                    f"that reproduce the scored tokens)")


def _context_problem(target: Any, *, suite: str, item_id: str, contexts: list[str],
                     requests: list[tuple[int, str, float]], group: dict[str, str],
                     group_spans: Sequence[tuple[int, int]] = (), differing_is_group: bool = False,
                     segments: Sequence[tuple[str, int, int]] = (), note: str | None = None) -> Problem:
    """A contrastive problem over scored continuations: ``Σ_r w_r · LL(contexts[k_r], continuation_r)`` for
    ``requests`` ``(k_r, continuation_r, w_r)``, tokenised exactly as the target's ``loglikelihood`` does.

    The features are the context's tokens (of ``contexts[0]``, the explained text); the continuations are fixed
    and scored. With two contexts (WinoBias: the pro- and the anti-stereotyped line) the token ids are aligned
    (difflib) and shared tokens are one slot read by both; the differing tokens form the ``group_term`` feature
    when ``differing_is_group`` (collapsed to one baseline token in both contexts on ablation, which makes the
    contexts identical), else they stay fixed. Shared context tokens overlapping ``group_spans`` (character
    spans of ``contexts[0]``) form ``group_term`` too. ``segments`` (``(kind, start, end)``) name template
    features for :func:`coarsen` (BBQ: each context sentence and the question).
    """
    tok = target.tokenizer
    if not 1 <= len(contexts) <= 2 or not all(c.strip() for c in contexts):
        raise DataError(f"suite {suite}: item {item_id!r} needs one or two non-empty contexts to explain")
    enc = [target._encode_request(contexts[k], cont) for k, cont, _ in requests]
    ctx_ids: dict[int, list[int]] = {}
    for (k, _, _), (c_ids, cont_ids) in zip(requests, enc, strict=True):
        if ctx_ids.setdefault(k, list(c_ids)) != list(c_ids):
            raise DataError(f"suite {suite}: item {item_id!r}: one context tokenises two ways")
        if not cont_ids:
            raise DataError(f"suite {suite}: item {item_id!r} has an empty continuation: nothing to explain")
        if len(cont_ids) > target.max_length:
            raise DataError(f"suite {suite}: item {item_id!r}: a continuation is longer than the model's context "
                            f"({target.max_length} tokens): nothing to explain")
    text = contexts[0]
    ctx_text = text.rstrip() if text != text.rstrip() else text
    c0 = ctx_ids[0]
    offs0 = _context_offsets(tok, ctx_text, c0)
    base_tok = baseline_token(tok)
    features: list[FeatureSpec] = []
    slot_ids: list[int] = []
    slot_feat: list[int] = []
    slot_base: list[int] = []
    group_feat: int | None = None

    def new_slot(tid: int, feat: int) -> int:
        slot_ids.append(int(tid))
        slot_feat.append(feat)
        slot_base.append(base_tok if feat >= 0 else int(tid))
        return len(slot_ids) - 1

    def group_index(lo: int, hi: int) -> int:
        nonlocal group_feat
        if group_feat is None:
            group_feat = len(features)
            features.append(_merged(text, None, lo, hi, "group_term"))
        else:
            features[group_feat] = _merged(text, features[group_feat], lo, hi, "group_term")
        return group_feat

    def shared_feature(i: int) -> int:
        s0, s1 = offs0[i]
        if s1 <= s0:
            return -1  # a special token (BOS) is fixed
        if any(s0 < b and s1 > a for a, b in group_spans):
            return group_index(s0, s1)
        features.append(FeatureSpec(text[s0:s1], s0, s1, "token"))
        return len(features) - 1

    ctx_slots: dict[int, list[int]] = {0: [], 1: []}
    diff_blocks: list[tuple[list[int], list[int]]] = []
    c1 = ctx_ids.get(1, c0)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, c0, c1, autojunk=False).get_opcodes():
        if op == "equal":
            for i in range(i1, i2):
                k = new_slot(c0[i], shared_feature(i))
                ctx_slots[0].append(k)
                ctx_slots[1].append(k)
            continue
        f = -1
        if differing_is_group and i2 > i1:
            f = group_index(offs0[i1][0], offs0[i2 - 1][1])
        elif differing_is_group and group_feat is not None:
            f = group_feat
        pa = [len(ctx_slots[0]) + n for n in range(i2 - i1)]
        ctx_slots[0].extend(new_slot(c0[i], f) for i in range(i1, i2))
        pb = [len(ctx_slots[1]) + n for n in range(j2 - j1)]
        ctx_slots[1].extend(new_slot(c1[j], f) for j in range(j1, j2))
        diff_blocks.append((pa, pb))
    if differing_is_group and diff_blocks and group_feat is None:  # only insertions in the second context
        group_feat = len(features)
        features.append(FeatureSpec("", 0, 0, "group_term"))
        for _pa, pb in diff_blocks:
            for q in pb:
                slot_feat[ctx_slots[1][q]] = group_feat
                slot_base[ctx_slots[1][q]] = base_tok
    seqs = []
    keep = target.max_length + 1  # the target scores (context + continuation) left-truncated to this many tokens
    cut = 0
    for (k, _, w), (_, cont_ids) in zip(requests, enc, strict=True):
        slots = list(ctx_slots[k]) + [new_slot(t, -1) for t in cont_ids]
        scored = [False] * len(ctx_slots[k]) + [True] * len(cont_ids)
        drop = max(0, len(slots) - keep)
        cut = max(cut, drop)
        s = _Seq(slots[drop:], scored[drop:], float(w))
        if differing_is_group and group_feat is not None and len(contexts) == 2:
            for pa, pb in diff_blocks:
                pos = pa if k == 0 else pb
                other = pb if k == 0 else pa
                if pos and pos[0] >= drop:
                    s.collapse.append((pos[0] - drop, pos[-1] + 1 - drop, group_feat, [base_tok] if other else []))
        seqs.append(s)
    if cut:
        note = ((note + "; ") if note else "") + (f"the first {cut} tokens lie beyond the model's context "
                                                  f"({target.max_length}): the model did not read them, their "
                                                  "attribution is 0")
    prob = _finish(target, suite=suite, item_id=item_id, kind="preference", text=text, features=features,
                   slot_ids=slot_ids, slot_feat=slot_feat, slot_base=slot_base, seqs=seqs, group=group, note=note)
    prob.segments = list(segments)
    return prob


def stereoset_problem(target: Any, spec: Any, item_id: str, item: dict[str, Any]) -> Problem:
    """StereoSet: preference = score(stereotype) − score(anti-stereotype), each the candidate's mean
    log-probability per token as the scorer stores it (``score["stereotype"] − score["anti_stereotype"]``).

    Intrasentence (``scoring: lm_eval``): the two filled sentences conditioned on the start token, as a
    CrowS-Pairs pair whose differing words (the filled BLANK, the attribute) stay fixed; the shared tokens are
    the features and the target term's tokens form ``group_term`` (ablated to the baseline token).
    Intersentence: the context's tokens are the features (the target term in it is ``group_term``), the two
    candidate sentences are fixed continuations. ``scoring: bias_bench`` conditions each intrasentence token on
    a different prefix and is not explained."""
    from auditlm.scorers import get_scorer

    _check_target(target)
    stereo, anti = str(item["stereotype"]).strip(), str(item["anti_stereotype"]).strip()
    term = str(item.get("target", ""))
    group = {"bias_type": str(item.get("bias_type", "")), "type": str(item.get("type", ""))}
    if item.get("type") == "intrasentence":
        if getattr(get_scorer(spec).options, "scoring", "lm_eval") != "lm_eval":
            raise SuiteSpecError(f"suite {spec.id}: StereoSet intrasentence items scored with options.scoring "
                                 "bias_bench cannot be explained (valid: lm_eval)")
        n_a = len(target._encode_request("", stereo)[1])
        n_b = len(target._encode_request("", anti)[1])
        at = stereo.lower().find(term.lower()) if term else -1
        span = (at, at + len(term)) if at >= 0 else None
        return _pair_problem(target, suite=spec.id, item_id=item_id, first=stereo, second=anti, group_span=span,
                             neutral_text=None, differing_is_group=False, group=group,
                             weights=(1.0 / max(n_a, 1), -1.0 / max(n_b, 1)))
    ctx = str(item["context"]).strip()
    if ctx[-1:] not in (".", "!", "?"):
        ctx += "."
    conts = [" " + stereo, " " + anti]
    n = [len(target._encode_request(ctx, c)[1]) for c in conts]
    at = ctx.lower().find(term.lower()) if term else -1
    spans = [(at, at + len(term))] if at >= 0 else []
    return _context_problem(target, suite=spec.id, item_id=item_id, contexts=[ctx],
                            requests=[(0, conts[0], 1.0 / max(n[0], 1)), (0, conts[1], -1.0 / max(n[1], 1))],
                            group=group, group_spans=spans)


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (split after . ! ? followed by whitespace)."""
    spans, start = [], 0
    for m in re.finditer(r"[.!?](?=\s)|$", text):
        end = m.end()
        seg = text[start:end]
        if seg.strip():
            lead = len(seg) - len(seg.lstrip())
            spans.append((start + lead, end))
        start = end
    return spans


def bbq_problem(target: Any, spec: Any, item_id: str, item: dict[str, Any], logprobs: Sequence[float]) -> Problem:
    """BBQ: preference = LL(chosen answer) − LL(runner-up) of the stored choice log-likelihoods (lm-eval's prompt
    and choices, :func:`~auditlm.scorers.bias.bbq_prompt`), attributed to the prompt's tokens; template features
    (:func:`coarsen`) are each context sentence and the question."""
    from auditlm.scorers.bias import bbq_choices, bbq_prompt

    _check_target(target)
    prompt = bbq_prompt(item)
    choices = bbq_choices(item)
    lp = [float(x) for x in logprobs]
    if len(lp) != len(choices) or len(lp) < 2:
        raise DataError(f"suite {spec.id}: item {item_id!r} stored {len(lp)} choice log-likelihoods for "
                        f"{len(choices)} choices: nothing to explain")
    order = sorted(range(len(lp)), key=lambda i: (-lp[i], i))
    first, second = order[0], order[1]
    segs: list[tuple[str, int, int]] = []
    ctx = str(item["context"])
    for n, (a, b) in enumerate(_sentence_spans(ctx), start=1):
        segs.append((f"context_sentence_{n}", a, b))
    q0 = prompt.find("Q: ") + 3
    segs.append(("question", q0, q0 + len(str(item["question"]))))
    group = {"category": str(item.get("category", "")), "context_condition": str(item.get("context_condition", "")),
             "chosen": choices[first], "runner_up": choices[second]}
    return _context_problem(target, suite=spec.id, item_id=item_id, contexts=[prompt],
                            requests=[(0, " " + choices[first], 1.0), (0, " " + choices[second], -1.0)],
                            group=group, segments=segs)


def winobias_problem(target: Any, spec: Any, item_id: str, item: dict[str, Any]) -> Problem:
    """WinoBias (``method: refers_to``): the item's ``margin_gap`` term, ``[ll(gold) − ll(other)]`` on the
    pro-stereotyped line minus the same on the anti-stereotyped line, attributed to the shared tokens of the two
    prompts; the pronouns (the only difference between the lines) are ``group_term``: ablated, both lines read
    the same prompt and the target is exactly 0."""
    from auditlm.scorers import get_scorer

    _check_target(target)
    method = getattr(get_scorer(spec).options, "method", "refers_to")
    if method != "refers_to":
        raise SuiteSpecError(f"suite {spec.id}: WinoBias items scored with options.method {method} cannot be "
                             "explained (valid: refers_to; partial removes the pronoun, so nothing differs)")
    from auditlm.scorers.bias import winobias_requests

    pro = winobias_requests(item["pro"], method)
    anti = winobias_requests(item["anti"], method)
    if pro[0].context != pro[1].context or anti[0].context != anti[1].context:
        raise DataError(f"suite {spec.id}: item {item_id!r}: the two candidates of a line have different prompts")
    ctx = [pro[0].context, anti[0].context]
    reqs = [(0, pro[0].continuation, 1.0), (0, pro[1].continuation, -1.0), (1, anti[0].continuation, -1.0),
            (1, anti[1].continuation, 1.0)]
    return _context_problem(target, suite=spec.id, item_id=item_id, contexts=ctx, requests=reqs,
                            group={"type": str(item.get("type", ""))}, differing_is_group=True)


def coarsen(problem: Problem) -> Problem:
    """The problem with template features: ``group_term`` (if any), each named segment (BBQ's context sentences
    and question), and ``rest`` — every other token feature as one feature (its pieces in ``spans``). Slots are regrouped; the forward
    functions and the neutral replacements are unchanged, so ablating ``rest`` ablates all its tokens at once."""
    segs = list(getattr(problem, "segments", []) or [])
    mapping: dict[int, int] = {}
    feats: list[FeatureSpec] = []
    by_name: dict[str, int] = {}
    rest: FeatureSpec | None = None
    for i, f in enumerate(problem.features):
        if f.kind != "token":
            mapping[i] = len(feats)
            feats.append(f)
            continue
        name = next((k for k, a, b in segs if f.start < b and f.end > a), None)
        key = name or "rest"
        if key not in by_name:
            by_name[key] = len(feats)
            if name is not None:
                _, a, b = next(s for s in segs if s[0] == name)
                feats.append(FeatureSpec(problem.text[a:b], a, b, name))
            else:
                feats.append(FeatureSpec("", f.start, f.end, "rest"))
        mapping[i] = by_name[key]
        if name is None:
            rest = _merged(problem.text, rest, f.start, f.end, "rest")
    if rest is not None:
        feats[by_name["rest"]] = rest
    sf = problem.slot_feature.clone()
    for old, new in mapping.items():
        sf[problem.slot_feature == old] = new
    out = dataclasses.replace(problem, features=feats, slot_feature=sf, _value=problem._value)
    out.segments = segs
    return out


def generation_problem(target: Any, spec: Any, item_id: str, prompt: str, text: str, *,
                       group: dict[str, str], group_spans: Sequence[tuple[int, int]] = (),
                       note: str | None = None) -> Problem:
    """A generation suite (BOLD, counterfactual generation): log p(the stored generation | the prompt), attributed
    to the prompt's tokens (``group_spans`` of the prompt form ``group_term``)."""
    return _prompt_problem(target, spec, item_id, prompt, text, None, "sequence_logprob", note, group,
                           group_spans)


def generic_problem(forward: Callable[[torch.Tensor], torch.Tensor], layer: torch.nn.Module,
                    input_ids: Sequence[int], baseline_ids: Sequence[int], *, text: str | None = None,
                    forward_ids: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Problem:
    """A problem over any forward function of token ids (``[n, len]`` → ``[n]``), one token feature per position.

    ``layer`` is the module whose output Layer Integrated Gradients interpolates (it must be called by
    ``forward_ids``, default ``forward``). ``text`` defaults to the ids written out, space-separated.
    """
    words = [str(i) for i in input_ids]
    text = text if text is not None else " ".join(words)
    feats, pos = [], 0
    for w in (text.split(" ") if len(text.split(" ")) == len(words) else words):
        feats.append(FeatureSpec(w, pos, pos + len(w)))
        pos += len(w) + 1
    n = len(input_ids)
    return Problem(suite="test", item_id="0", kind="preference", text=text, features=feats,
                   input_ids=torch.tensor([list(input_ids)], dtype=torch.long),
                   baseline_ids=torch.tensor([list(baseline_ids)], dtype=torch.long),
                   slot_feature=torch.arange(n), ids_forward=forward, forward_ids=forward_ids or forward,
                   layer=layer)
