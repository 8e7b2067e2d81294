# Measures llama.cpp (llama-cpp-python) on the same GGUF and token ids as
# `sift bench`, so the two speeds come from one run on one machine.
# Input (stdin, JSON): model, threads, prefill_tokens, decode_prompt, decode_steps.
import json, sys, time
from llama_cpp import Llama

cfg = json.load(sys.stdin)
n_ctx = max(len(cfg["prefill_tokens"]), len(cfg["decode_prompt"]) + cfg["decode_steps"]) + 8
llm = Llama(model_path=cfg["model"], n_ctx=n_ctx, n_batch=512, n_threads=cfg["threads"], verbose=False)

def prefill():
    llm.reset()
    t = time.perf_counter()
    llm.eval(cfg["prefill_tokens"])
    return time.perf_counter() - t

prefill()  # warm-up
prefill_s = prefill()

llm.reset()
llm.eval(cfg["decode_prompt"])
t = time.perf_counter()
for _ in range(cfg["decode_steps"]):
    row = llm.scores[llm.n_tokens - 1]
    llm.eval([int(row.argmax())])
decode_s = time.perf_counter() - t
print(json.dumps({
    "prefill_tokens_per_second": len(cfg["prefill_tokens"]) / prefill_s,
    "decode_tokens_per_second": cfg["decode_steps"] / decode_s,
    "threads": cfg["threads"],
}))
