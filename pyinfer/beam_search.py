"""Beam search over the KV cache, step for step as HF transformers' GenerationMixin._beam_search (v5) does it, so
that generate(num_beams=B, do_sample=False, length_penalty, early_stopping, num_return_sequences) returns the same
sequences. The prompt is evaluated once in the model's root context; each beam is a child context that reads the
prompt's cache in place (fork_child, no copy) and owns only its generated positions, which are copied between
beams (copy_own_from) only when a beam is continued by more than one successor. One eval per beam per step.
Not here: sampling-based beams (do_sample=True), diversity groups, constraints, logits processors.

HF's rules, matched here (transformers/generation/utils.py, _beam_search and its helpers):
- scores are sums of log_softmax(raw logits) over the generated tokens; the first step starts from beam 0 alone
  (the other beams start at -1e9);
- each step ranks all B * n_vocab continuations and keeps the top K = max(2, 1 + n_eos) * B;
- a candidate "finishes" when its token is an EOS id or the sequence reaches max_length = n_prompt + max_tokens;
  only candidates ranked in the top B can enter the finished set, with score sum_logprobs / L ** length_penalty
  where L counts the generated tokens including the EOS (not the prompt); the finished set keeps the best B;
- the next running beams are the best B candidates that did not finish;
- the search ends when no candidate can continue (max_length), when early_stopping is True and B hypotheses are
  finished, or when the heuristic says no running beam can beat the worst finished one: best running score /
  L' ** length_penalty <= worst finished score, with L' the current generated length (early_stopping False) or
  max_length - n_prompt (early_stopping "never" with length_penalty > 0); it is only checked once B are finished.
"""
import numbers
import time

import numpy as np

from .results import Completion, GenerationStats, Sequence, stop_token_ids
from .sampling import log_softmax

NEG = -1.0e9  # HF's "impossible" score offset


def _check_early_stopping(v):
    if v is True or v is False or v == "never":
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v in (0, 1):
        return bool(v)
    raise ValueError(f"early_stopping must be True, False or 'never', got {v!r}")


def _topk_desc(scores, k):
    """Indices of the k largest scores, largest first (equal scores: lower index first)."""
    k = min(k, scores.shape[0])
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def beam_search(model, prompt_ids, num_beams, max_tokens, *, length_penalty=1.0, early_stopping=False,
                num_return_sequences=1, eos_ids=(), cache_prompt=True, stats=None):
    """The num_return_sequences best hypotheses, best first, as (tokens incl. an ending EOS, score, sum_logprob).

    max_tokens: new tokens at most (-1/None: up to the context: n_ctx - n_prompt + 1, as the last token is never
    evaluated; a larger value is capped the same way). eos_ids: ids that end a hypothesis (empty: none).
    stats: a GenerationStats to fill (prompt and generation timings, counts).
    """
    B = int(num_beams)
    if B < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams!r}")
    R = num_return_sequences
    if isinstance(R, bool) or not isinstance(R, numbers.Integral) or not 1 <= R <= B:
        raise ValueError(f"num_return_sequences must be an integer in [1, num_beams={B}], got {R!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real) \
            or not np.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    lp_exp = float(length_penalty)
    early_stopping = _check_early_stopping(early_stopping)
    prompt_ids = [int(t) for t in prompt_ids]
    P, n_ctx = len(prompt_ids), int(model.n_ctx)
    if P == 0:
        raise ValueError("prompt is empty (0 tokens); give at least one token")
    if P > n_ctx:
        raise ValueError(f"prompt is {P} tokens but the context is {n_ctx}; shorten the prompt or load the model "
                         f"with a larger context (-c/--ctx-size), up to the model's maximum")
    if max_tokens is None or max_tokens == -1:
        max_tokens = n_ctx - P + 1
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral) or max_tokens < 0:
        raise ValueError(f"max_tokens must be an integer >= 0, or -1/None for no limit, got {max_tokens!r}")
    max_new = min(int(max_tokens), n_ctx - P + 1)
    if max_new == 0:
        return [([], 0.0, 0.0)] * R
    eos = np.array(sorted({int(t) for t in eos_ids}), dtype=np.int64)
    K = max(2, 1 + eos.size) * B  # candidates kept per step
    max_length = P + max_new

    # --- prompt: once, in the root context --------------------------------------------------------------------
    t0 = time.perf_counter()
    if cache_prompt and hasattr(model, "trim_cache"):
        n_keep = int(model.trim_cache(prompt_ids))
    else:
        model.reset()
        n_keep = 0
    logits0 = np.asarray(model.eval(prompt_ids[n_keep:]))  # [n_vocab] after the prompt
    t1 = time.perf_counter()
    if stats is not None:
        stats.n_prompt, stats.n_reused, stats.t_prompt_s = P, n_keep, t1 - t0
    V = logits0.shape[0]
    root = model._ctx
    n_threads = int(model.n_threads)
    ctxs = [root.fork_child(P, n_threads) for _ in range(B)]  # beam b's generated positions (shares the prompt)

    run_tokens = [[] for _ in range(B)]  # [B] generated ids of each running beam
    run_scores = np.full(B, NEG)  # [B] summed log-probs; only beam 0 is live at the start
    run_scores[0] = 0.0
    lp_rows = np.tile(log_softmax(logits0), (B, 1))  # [B, V] log-probs of the next token per running beam
    fin = [None] * B  # finished hypotheses (tokens, score, sum_logprob), best first; None = an empty slot
    fin_scores = np.full(B, NEG)  # [B]
    fin_done = np.zeros(B, dtype=bool)  # [B] slot holds a finished hypothesis
    heuristic_open = True  # HF: is_early_stop_heuristic_unsatisfied
    cur_len = P
    n_evals = 0

    while True:
        # b. accumulate and rank all B * V continuations
        acc = (lp_rows + run_scores[:, None]).reshape(-1)  # [B * V]
        top = _topk_desc(acc, K)  # [K] flat indices, best first
        cand_beam, cand_tok, cand_score = top // V, top % V, acc[top]  # [K] each
        # d. which candidates finish (EOS token, or the sequence reaches max_length)
        hits = np.isin(cand_tok, eos) | (cur_len + 1 >= max_length)  # [K]
        # e. next running beams: the best B that did not finish
        nxt = _topk_desc(cand_score + hits * NEG, B)  # [B] indices into the K candidates
        new_scores = (cand_score + hits * NEG)[nxt]
        # f. the finished set: only the top-B-ranked candidates that just finished may enter
        just = hits & (np.arange(K) < B)
        f_scores = cand_score / float(cur_len + 1 - P) ** lp_exp
        if fin_done.all() and early_stopping is True:
            f_scores = f_scores + NEG
        if not heuristic_open:
            f_scores = f_scores + NEG
        f_scores = f_scores + (~just) * NEG
        merged_scores = np.concatenate([fin_scores, f_scores])  # [B + K]
        keep = _topk_desc(merged_scores, B)
        new_fin, new_done = [], []
        for m in keep:
            if m < B:
                new_fin.append(fin[m])
                new_done.append(fin_done[m])
            else:
                c = m - B
                hyp = run_tokens[cand_beam[c]] + [int(cand_tok[c])]
                new_fin.append((hyp, float(f_scores[c]), float(cand_score[c])) if just[c] else None)
                new_done.append(bool(just[c]))
        fin, fin_scores, fin_done = new_fin, merged_scores[keep], np.array(new_done)

        # g. advance the running beams
        src = cand_beam[nxt]  # [B] the beam each new beam continues
        toks = cand_tok[nxt]  # [B] its new token
        run_tokens = [run_tokens[s] + [int(t)] for s, t in zip(src, toks)]
        run_scores = new_scores
        cur_len += 1
        if early_stopping == "never" and lp_exp > 0.0:
            best_len = max_length - P
        else:
            best_len = cur_len - P
        best_running = run_scores[0] / float(best_len) ** lp_exp
        worst_finished = np.where(fin_done, fin_scores.min(), NEG)  # HF compares per slot
        heuristic_open = heuristic_open and bool(np.any(best_running > worst_finished))
        exists_open = not (fin_done.all() and early_stopping is True)
        can_continue = not hits.all()
        if not (heuristic_open and exists_open and can_continue):
            break

        # the caches follow the beams: a source's first successor takes its context as it is, further successors
        # get a copy of its generated positions in a context no successor claimed; all copies before any eval
        owner, free = {}, [b for b in range(B) if b not in set(src.tolist())]
        new_ctxs = [None] * B
        for j, s in enumerate(src.tolist()):
            if s not in owner:
                owner[s] = j
                new_ctxs[j] = ctxs[s]
        for j, s in enumerate(src.tolist()):
            if new_ctxs[j] is None:
                c = ctxs[free.pop()]
                c.copy_own_from(ctxs[s])
                new_ctxs[j] = c
        ctxs = new_ctxs
        rows = []
        for j in range(B):
            if run_scores[j] <= NEG / 2:  # a dead beam (fewer live continuations than beams): never ranked
                rows.append(np.full(V, NEG))
                continue
            if ctxs[j].n_past >= n_ctx:  # cannot happen: max_length <= n_ctx + 1
                raise RuntimeError("beam search ran past the context")
            rows.append(log_softmax(ctxs[j].eval(np.array([toks[j]], dtype=np.int32), False)[0]))
            n_evals += 1
        lp_rows = np.stack(rows)  # [B, V]

    if stats is not None:
        stats.t_gen_s = time.perf_counter() - t1
        stats.n_gen = n_evals
    out = []
    for i in range(R):
        if fin[i] is None:  # fewer than R finished (cannot happen at max_length; kept for safety)
            out.append((run_tokens[i], float(run_scores[i]), float(run_scores[i])))
        else:
            out.append(fin[i])
    return out


def beam_generate(model, prompt_ids, num_beams, max_tokens=128, *, length_penalty=1.0, early_stopping=False,
                  num_return_sequences=1, ignore_eos=False, details=False, cache_prompt=True, on_finish=None):
    """generate(num_beams > 1): the best text, a list of texts (num_return_sequences > 1), or a Completion.
    ignore_eos=True scores end-of-generation tokens as ordinary tokens (HF with eos_token_id=None)."""
    eos = () if ignore_eos else stop_token_ids(model.tokenizer)
    st = GenerationStats()
    hyps = beam_search(model, prompt_ids, num_beams, max_tokens, length_penalty=length_penalty,
                       early_stopping=early_stopping, num_return_sequences=num_return_sequences, eos_ids=eos,
                       cache_prompt=cache_prompt, stats=st)
    seqs = []
    for toks, score, total in hyps:
        reason = "length"
        if toks and toks[-1] in eos:
            toks, reason = toks[:-1], "eos"
        seqs.append(Sequence(tokens=toks, text=model.detokenize(toks), score=score, sum_logprob=total,
                             finish_reason=reason))
    best = seqs[0]
    st.stop_reason = best.finish_reason
    if on_finish is not None:
        on_finish(None, None)
    if details:
        st_t = st.timings()
        st_t["predicted_n"] = len(best.tokens)
        return Completion(text=best.text, tokens=list(best.tokens), finish_reason=best.finish_reason,
                          n_prompt=st.n_prompt, n_gen=len(best.tokens), n_reused=st.n_reused, timings=st_t,
                          sequences=seqs)
    if num_return_sequences > 1:
        return [s.text for s in seqs]
    return best.text
