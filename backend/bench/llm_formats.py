"""Which GGUF format the embedded LLM should run as: speed and sameness of the packaged Q4_1 and copies of it.

The packaged SmolLM2 is Q4_1. Each copy is written from it with llama.cpp's own quantizer (Q8_0, the
embedded default; Q4_0 and float16 for comparison) and measured on 2 threads:

- reading a 20-token turn after a cached system prompt (what each voice turn costs before its first token);
- writing one token;
- sameness with the Q4_1 file over the first 1500 tokens of the README: how often the two pick the same next
  token, the mean KL divergence of their next-token distributions, and each one's perplexity.

A float16 copy is the Q4_1 weights almost exactly, so its agreement is the floor set by arithmetic alone.

Then, for Q4_1 and Q8_0, how many greedy replies to the voice benchmarks' questions repeat a 4-word phrase
("a classic comfort food with a twist: a classic comfort food with ...") at each repeat penalty: what
``VOICE_REPEAT_PENALTY`` is chosen by.

    cd backend && .venv/bin/python -m bench.llm_formats
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.config.settings import REPO_DIR, Settings
from app.models import packaged_smollm2, rewrite_gguf
from bench.agent_latency import QUESTIONS
from bench.common import UTTERANCES, machine, save

PROMPT = ("<|im_start|>system\nYou are a helpful voice assistant. Answer briefly, in one or two short sentences."
          "<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Tell me about it.<|im_end|>\n"
          "<|im_start|>assistant\n")
TURN_TOKENS = 20
ROUNDS = 5


def speed(path: Path) -> dict[str, float]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)
    tokens = llm.tokenize(PROMPT.encode(), special=True)
    reads, writes = [], []
    for _ in range(ROUNDS):
        llm.reset()
        llm.eval(tokens[:-TURN_TOKENS])
        started = time.perf_counter()
        llm.eval(tokens[-TURN_TOKENS:])
        read = time.perf_counter()
        for i in range(30):
            llm.eval([tokens[5 + i % 10]])
        reads.append((read - started) * 1000)
        writes.append((time.perf_counter() - read) / 30 * 1000)
    return {"read_turn_ms": round(statistics.median(reads), 1), "token_ms": round(statistics.median(writes), 2)}


def log_probs(path: Path, text: str) -> tuple[np.ndarray, list[int]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=2, logits_all=True, verbose=False)
    tokens = llm.tokenize(text.encode())[:1500]
    llm.eval(tokens)
    logits = np.array(llm.scores[:len(tokens)], dtype=np.float64)
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True), tokens


PENALTIES = (1.0, 1.1, 1.15, 1.2, 1.3)


def repeats_a_phrase(text: str, n: int = 4) -> bool:
    said = [w.strip(".,:;!?\"'").lower() for w in text.split()]
    grams = [tuple(said[i:i + n]) for i in range(len(said) - n + 1)]
    return len(set(grams)) < len(grams)


def looping_replies(path: Path, questions: list[str]) -> dict[str, list[str]]:
    """Per repeat penalty, the questions whose greedy 60-token reply repeats a 4-word phrase."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=2, verbose=False)
    system = Settings(app_env="test", _env_file=None).voice_instructions
    out = {}
    for penalty in PENALTIES:
        out[str(penalty)] = [q for q in questions if repeats_a_phrase(llm.create_chat_completion(
            [{"role": "system", "content": system}, {"role": "user", "content": q}],
            temperature=0.0, max_tokens=60, repeat_penalty=penalty)["choices"][0]["message"]["content"])]
    return out


def main() -> None:
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's per-tensor report on loading
    text = (REPO_DIR / "README.md").read_text()
    packaged = packaged_smollm2()
    out: dict = {"machine": machine(), "model": packaged.name, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"q4_1 (packaged)": packaged}
        for name, ftype in (("q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), ("q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0),
                            ("f16", llama_cpp.LLAMA_FTYPE_MOSTLY_F16)):
            files[name] = Path(tmp) / f"{name}.gguf"
            rewrite_gguf(packaged, files[name], ftype)
        reference, tokens = log_probs(packaged, text)
        targets = np.asarray(tokens[1:])
        for name, path in files.items():
            row = speed(path)
            lp = reference if path == packaged else log_probs(path, text)[0]
            row["same_next_token"] = round(float((lp.argmax(1) == reference.argmax(1)).mean()), 3)
            row["kl_from_q4_1"] = round(float((np.exp(reference) * (reference - lp)).sum(1).mean()), 4)
            row["perplexity"] = round(float(np.exp(-lp[np.arange(len(targets)), targets].mean())), 2)
            row["mb"] = round(path.stat().st_size / 1e6)
            out["formats"][name] = row
            print(f"{name:16s} read a {TURN_TOKENS}-token turn {row['read_turn_ms']:6.1f} ms, one token "
                  f"{row['token_ms']:5.2f} ms, same next token {row['same_next_token']:.3f}, KL {row['kl_from_q4_1']:.4f}, "
                  f"perplexity {row['perplexity']:.2f}, {row['mb']} MB", flush=True)
        questions = list(dict.fromkeys(QUESTIONS + UTTERANCES))
        out["looping_replies"] = {}
        for name in ("q4_1 (packaged)", "q8_0"):
            loops = out["looping_replies"][name] = looping_replies(files[name], questions)
            print(f"{name:16s} greedy replies repeating a 4-word phrase, of {len(questions)}, by repeat penalty: "
                  + ", ".join(f"{p}: {len(q)}" for p, q in loops.items()), flush=True)
    print("saved", save("llm_formats", out))


if __name__ == "__main__":
    main()
