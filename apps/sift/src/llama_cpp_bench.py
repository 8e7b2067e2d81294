# Measures llama.cpp (llama-cpp-python) on the same GGUF and token ids as
# `sift bench`, so the two speeds come from one run on one machine: the model
# loads once, then each request line is timed when asked, so that sift's and
# llama.cpp's measurements can alternate (shared machines drift).
# Input (stdin, JSON lines): first {model, threads, n_ctx}; then
# {"prefill": [token ids]} -> {"seconds": s}, or
# {"decode_prompt": [ids], "decode_steps": n} -> {"seconds": s} (the steps only).
import json, sys, time
from llama_cpp import Llama

cfg = json.loads(sys.stdin.readline())
llm = Llama(model_path=cfg["model"], n_ctx=cfg["n_ctx"], n_batch=512, n_threads=cfg["threads"], verbose=False)
print(json.dumps({"ready": True}), flush=True)

for line in sys.stdin:
    req = json.loads(line)
    llm.reset()
    if "prefill" in req:
        t = time.perf_counter()
        llm.eval(req["prefill"])
        seconds = time.perf_counter() - t
    else:
        llm.eval(req["decode_prompt"])
        t = time.perf_counter()
        for _ in range(req["decode_steps"]):
            row = llm.scores[llm.n_tokens - 1]
            llm.eval([int(row.argmax())])
        seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds}), flush=True)
