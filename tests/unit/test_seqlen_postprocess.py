"""Sequence-length curriculum post-processing (spec §4, §13.5): GPT truncate/reshape, BERT trimming."""
import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from megatron.data_efficiency.seqlen import (SeqlenError, gpt_seqlen_reshape, make_bert_data_post_process,
                                             make_gpt_data_post_process, post_process_bert, post_process_gpt,
                                             reshape_num_rows)


def numbered_text(b, total):
    """text[i, t] = 1000*i + t, so every row of the output tells where it came from."""
    return torch.arange(b).unsqueeze(1) * 1000 + torch.arange(total).unsqueeze(0)


def spec_rows(b, seq, cs):
    """§13.5: min(ceil(B(L+1)/(cs+1)), B(floor((L+1)/(cs+1)) + 1)), made even when > 1."""
    rows = min(math.ceil(b * (seq + 1) / (cs + 1)), b * ((seq + 1) // (cs + 1) + 1))
    return rows - 1 if rows > 1 and rows % 2 else rows


CASES = [(b, seq, cs) for b in (1, 2, 3, 5, 8) for seq in (8, 15, 16, 33, 64) for cs in (1, 2, 3, 5, 7, 8, 12, 31)
         if cs < seq]


@pytest.mark.parametrize("b, seq, cs", CASES)
def test_reshape_rows_shapes_and_contents(b, seq, cs):
    text = numbered_text(b, seq + 1)
    rows = spec_rows(b, seq, cs)
    assert reshape_num_rows(b, seq, cs) == rows
    out, model_len = post_process_gpt({"text": text}, cs, seq, "reshape")
    assert model_len == cs
    assert out["text"].shape == (rows, cs + 1)
    width, k = cs + 1, (seq + 1) // (cs + 1)
    for j in range(rows):
        if j < b * k:  # sample-major chunks
            i, c = divmod(j, k)
            expected = text[i, c * width:(c + 1) * width]
        else:  # tail rows: last cs+1 tokens of sample j - b*k
            expected = text[j - b * k, seq + 1 - width:]
        assert torch.equal(out["text"][j], expected)


def test_reshape_even_rule_and_token_count():
    # B=1, L+1=10, cs+1=4: ceil(10/4)=3 rows available and wanted -> odd -> 2
    assert reshape_num_rows(1, 9, 3) == 2
    assert gpt_seqlen_reshape(numbered_text(1, 10), 3).shape == (2, 4)
    # token count stays about B*(L+1) as cs shrinks: 8 x 2049 tokens with cs=80
    rows = reshape_num_rows(8, 2048, 80)
    assert rows == 202 and abs(rows * 81 - 8 * 2049) < 2 * 81  # ceil(16392/81) = 203 -> even 202


@pytest.mark.parametrize("b, seq, cs", [(4, 16, 5), (3, 33, 8), (2, 64, 31)])
def test_truncate_keeps_cs_plus_one_raw_tokens(b, seq, cs):
    text = numbered_text(b, seq + 1)
    labels = text[:, 1:].clone()
    index = torch.arange(b).unsqueeze(1)
    out, model_len = post_process_gpt({"text": text, "labels": labels, "index": index}, cs, seq, "truncate")
    assert model_len == cs
    assert torch.equal(out["text"], text[:, :cs + 1])
    assert torch.equal(out["labels"], labels[:, :cs])  # already-shifted tensors keep cs tokens
    assert out["index"] is index


def test_no_change_at_full_length_or_without_mode():
    text = numbered_text(2, 17)
    for cs, mode in ((16, "truncate"), (40, "reshape"), (8, None), (None, "truncate")):
        out, model_len = post_process_gpt({"text": text}, cs, 16, mode)
        assert out["text"] is text and model_len == 16


def test_reshape_per_sample_tensors_follow_their_rows():
    b, seq, cs = 3, 16, 4
    text = numbered_text(b, seq + 1)
    out, _ = post_process_gpt({"text": text, "index": torch.arange(b).unsqueeze(1) + 100}, cs, seq, "reshape")
    assert out["index"].shape == (out["text"].shape[0], 1)
    assert torch.equal(out["index"][:, 0] - 100, out["text"][:, 0] // 1000)


def test_reshape_rejects_shifted_tensors_and_bad_cs():
    text = numbered_text(2, 17)
    with pytest.raises(SeqlenError, match="key 'labels' has length 16"):
        post_process_gpt({"text": text, "labels": text[:, 1:]}, 4, 16, "reshape")
    with pytest.raises(SeqlenError, match="curriculum seqlen must be >= 1, got 0"):
        post_process_gpt({"text": text}, 0, 16, "truncate")
    with pytest.raises(SeqlenError, match="unknown seqlen curriculum mode"):
        post_process_gpt({"text": text}, 4, 16, "chop")


def test_gpt_hook_reads_the_metric_key():
    hook = make_gpt_data_post_process(16)
    text = numbered_text(2, 17)
    assert hook({"text": text}, {"current_difficulties": {"seqlen_truncate": 8, "voc": 3}})["text"].shape == (2, 9)
    assert hook({"text": text}, {"current_difficulties": {"seqlen_reshape": 8}})["text"].shape == (4, 9)
    assert hook({"text": text}, {"current_difficulties": {"voc": 3}})["text"] is text


def bert_batch(lengths, seq):
    b = len(lengths)
    pad = torch.zeros(b, seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        pad[i, :n] = 1
    return {"text": torch.randint(5, 100, (b, seq)), "types": torch.zeros(b, seq, dtype=torch.long),
            "labels": torch.full((b, seq), -1), "loss_mask": torch.zeros(b, seq), "padding_mask": pad,
            "is_random": torch.zeros(b, dtype=torch.long)}


def test_bert_trims_to_longest_row_rounded_to_8():
    batch = bert_batch([5, 19, 11], 64)
    out, eff = post_process_bert(batch, 64)
    assert eff == 24
    for key in ("text", "types", "labels", "loss_mask", "padding_mask"):
        assert torch.equal(out[key], batch[key][:, :24])
    assert out["is_random"] is batch["is_random"]
    assert post_process_bert(bert_batch([61, 3], 64), 64)[1] == 64  # 61 -> 64: nothing to cut


def test_bert_truncate_metric_wins_over_padding():
    batch = bert_batch([60, 60], 64)
    out, eff = post_process_bert(batch, 64, curriculum_seqlen=16)
    assert eff == 16 and out["text"].shape == (2, 16)
    hook = make_bert_data_post_process(64)
    assert hook(batch, {"current_difficulties": {"seqlen_truncate": 20}})["text"].shape == (2, 24)
    assert hook(bert_batch([9, 3], 64), {"current_difficulties": {"voc": 5}})["text"].shape == (2, 16)


def _bert_allreduce_worker(rank, init_file, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        lengths = [5, 9] if rank == 0 else [30, 2]
        _, eff = post_process_bert(bert_batch(lengths, 64), 64)
        with open(f"{result_file}.{rank}", "w") as f:
            f.write(str(eff))
    finally:
        dist.destroy_process_group()


def test_bert_trim_uses_the_data_parallel_max(tmp_path):
    # fork: the children reuse the imported torch (spawn would pay ~5 s of imports per child)
    ctx = mp.start_processes(_bert_allreduce_worker, args=(str(tmp_path / "init"), str(tmp_path / "eff")), nprocs=2,
                             join=False, start_method="fork")
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the two gloo workers did not finish within 60 s")
    results = [int((tmp_path / f"eff.{r}").read_text()) for r in range(2)]
    assert results == [32, 32]  # rank 0 alone would cut to 16
