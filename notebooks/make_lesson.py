"""Writes notebooks/lesson.ipynb: edit the cells here, then run
`python notebooks/make_lesson.py && ruff format notebooks`."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 45 分钟，从零训练一个中文 GPT / A Chinese GPT from zero in 45 minutes

这本笔记本用 gptf 的 Python API（`gptf.api`）走一遍课堂的流程：训练、看损失曲线、提问、
做一次消融实验、看注意力。和命令行 `gptf run` 写出完全相同的运行目录。

This notebook runs the lesson through gptf's Python API: train, look at the loss curve, ask
questions, run one ablation, look at attention. It writes the same run folder as `gptf run`.

Run it from the repository root (`jupyter notebook notebooks/lesson.ipynb` after
`pip install -e ".[notebook]" -c constraints.txt`)."""),
    code("""import os
from pathlib import Path

import gptf.api as gptf

# The repository root: recipes and data paths are relative to it.
ROOT = Path(os.environ.get("GPTF_ROOT", Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()))
os.chdir(ROOT)
# The lesson uses the teacher recipe; the test suite runs this notebook on a tiny recipe instead.
RECIPE = os.environ.get("GPTF_LESSON_RECIPE", "recipes/teacher_3m.yaml")
OVERRIDES = [o for o in os.environ.get("GPTF_LESSON_OVERRIDES", "").split() if o]
ABLATION_STEPS = int(os.environ.get("GPTF_LESSON_ABLATION_STEPS", "150"))
print("recipe:", RECIPE, *OVERRIDES)"""),
    md("""## 1. 训练 / Train

和 `gptf run recipes/teacher_3m.yaml` 一样：先训练分词器（或读入），再训练、保存、量化、回答示例问题。
On a 2-core laptop the teacher recipe takes about two minutes."""),
    code("""result = gptf.train(RECIPE, *OVERRIDES)
print("run folder:", result.run_dir, " final val loss:", result.val_loss)"""),
    md("""## 2. 损失曲线 / The loss curve

问题：为什么训练损失一开始下降得这么快？验证损失为什么比训练损失高？
Ask the class: why does the loss fall so fast at first, and why is the val loss higher?"""),
    code("""import matplotlib.pyplot as plt

model = gptf.open_run(result.run_dir)
curves = model.loss_curves()
fig, ax = plt.subplots(figsize=(7, 4))
if curves.train:
    ax.plot(*zip(*curves.train, strict=True), label="train loss")
if curves.val:
    ax.plot(*zip(*curves.val, strict=True), "o-", label="val loss")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy per answer token")
ax.legend()
plt.show()"""),
    md("""## 3. 提问 / Ask it

教过的问题、换一种说法的问题、没教过的问题，各问几个。
A taught question, a reworded one, and one it was never taught."""),
    code("""questions = ["什么是注意力机制？", "解释蒸馏水与纯水区别？", "注意力到底在算什么", "今天股票会涨吗"]
for question, answer in zip(questions, model.ask_many(questions), strict=True):
    print(f"用户: {question}\\n回答: {answer}\\n")"""),
    code("""# One answer, token by token, with the probability the model gave each token.
generation = model.generate("什么是注意力机制？", temperature=0.0)
print(" | ".join(f"{t.piece}({t.probability:.2f})" for t in generation.tokens[:12]))"""),
    md("""## 4. 一次消融实验 / One ablation: RoPE vs no positions

每个变体用同样的种子、同样的数据顺序、同样的步数，只换一个组件。
Every variant gets the same seed, data order and steps; only one component changes."""),
    code("""summary = gptf.ablate(
    RECIPE,
    {"model.positional": ["rope", "none"]},
    *OVERRIDES,
    steps=ABLATION_STEPS,
    out=ROOT / "ablations" / "lesson",
    quiet=True,
)
for variant in summary["variants"]:
    print(variant["variant"], "final val loss", variant["final_val_loss"])"""),
    md("""## 5. 注意力 / Attention

每一行是一个词元，它把注意力分给前面哪些词元（因果遮罩：右上角全是 0）。
Each row is one token, and how it spreads its attention over the tokens before it."""),
    code("""maps = model.attention("什么是注意力机制？")
layer, head = 0, 0
fig, ax = plt.subplots(figsize=(6, 6))
ax.imshow(maps.weights[layer][head].numpy(), cmap="viridis")
ax.set_title(f"layer {layer}, head {head}")
ax.set_xticks(range(len(maps.labels)))
ax.set_yticks(range(len(maps.labels)))
plt.show()
print(maps.labels)"""),
]
nb = nbf.v4.new_notebook(
    cells=cells,
    metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    },
)
nbf.write(nb, "notebooks/lesson.ipynb")
