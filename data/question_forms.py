"""Generate many ways of asking each concept's question: templates x aliases, deterministically.

A 3.37M-parameter model trained on three wordings per question learns those three strings.
To teach it the *mapping* (these words name this concept, so give this answer) instead of
the sentences, every concept in ``data/concepts/*.yaml`` also lists the names students use
for it and the *kind* of question it answers; this module crosses those with question
templates that fit that kind. ``build_splits.py`` then picks a fixed number of the results
per concept (seeded by the concept id), drops any that would leak into val/test, and writes
them to ``train.jsonl`` next to the hand-written train phrasings.

Per-concept generator fields (all optional; see data/README.md)::

    names:  [RoPE, 旋转位置编码, rotary position embedding]   # what the concept is called
    kind:   [term]          # which banks the names go through: term (default), need; [] = none
    why:    {subject: [高压锅, 压力锅], predicate: [煮东西快, 做饭快]}   # 为什么 questions
    how:    [减轻过拟合, 防止过拟合]                               # 怎样/如何 questions
    diff:   {a: [RMSNorm], b: [LayerNorm, 层归一化]}                # A和B有什么区别
    asks:   ["{X}有参数吗", 太阳系有几颗行星]    # hand-written questions; {X} = each name
    calc:   "5×9"                                # arithmetic: ×, ÷, +, - of two integers

Template banks
--------------
* ``TERM_BASIC`` (any name), ``TERM_TECH`` (only for AI and computing topics: 有什么用,
  原理, 是什么意思 ...), ``TERM_EN`` (only for names written in Latin letters: "what is RoPE");
* ``NEED``: why the thing is needed (为什么需要因果掩码, 不用X会怎样);
* ``WHY`` / ``WHY_PHYSICAL``: subject x predicate (高压锅为什么煮东西快, 为什么高压锅做饭快);
* ``HOW``: an action (怎样减轻过拟合, 如何防止过拟合);
* ``DIFF``: two names, in both orders (A和B有什么区别, B跟A有啥不同);
* ``ASK_WRAPS``: a hand-written question as is, with a polite opening, or colloquially;
* ``DESCRIBE``: a clause of the concept's own answer, asked back ("两个向量对应位置相乘再求和
  叫什么"), so questions that describe a concept without naming it find its answer too;
* arithmetic: digits or Chinese numerals x operator words (乘, 乘以, ×, *) x endings
  (等于多少, 是多少, 得几, =?), both operand orders for × and +, 口诀 style (五九得几).

Every candidate belongs to a *group* (one name in one bank, one hand-written question, one
operator spelling ...). :func:`pick` takes groups round-robin in a seeded order, so a
concept's sample covers all of its names and hand-written questions before repeating any.
Only the standard library is used; the output depends on nothing but the sources.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping, Sequence

# The one answer to every question the data does not teach (see data/out_of_scope.yaml).
OUT_OF_SCOPE_ANSWER = "这个问题我还没有学过。"

TECH_TOPICS = frozenset({"model", "tokenization", "training", "inference", "pipeline", "identity", "computing"})

# ---------------------------------------------------------------- template banks
TERM_BASIC = (
    "什么是{X}",
    "{X}是什么",
    "{X}是啥",
    "啥是{X}",
    "{X}到底是什么",
    "请介绍一下{X}",
    "介绍下{X}",
    "请解释{X}",
    "解释一下{X}",
    "能讲讲{X}吗",
    "能不能说说{X}",
    "给我讲讲{X}",
    "简单说说{X}",
    "讲讲{X}呗",
    "想了解一下{X}",
    "科普一下{X}",
    "你知道{X}吗",
    "{X}是怎么回事",
    "关于{X}你知道什么",
    "{X}？",
)
TERM_TECH = (
    "{X}是什么意思",
    "{X}指的是什么",
    "什么叫{X}",
    "{X}有什么用",
    "{X}是干什么的",
    "{X}是干嘛用的",
    "{X}起什么作用",
    "{X}的作用是什么",
    "{X}怎么理解",
    "{X}的原理是什么",
    "{X}是怎么工作的",
    "通俗地解释一下{X}",
    "用一句话解释{X}",
    "举个例子说明{X}",
    "我不太懂{X}",
    "{X}的概念",
)
TERM_EN = ("what is {X}", "What's {X}?", "explain {X}", "what does {X} mean")
NEED = (
    "为什么需要{X}",
    "为什么要有{X}",
    "为啥需要{X}",
    "{X}有什么必要",
    "不用{X}会怎样",
    "没有{X}会怎么样",
    "去掉{X}行不行",
    "{X}是必须的吗",
    "{X}能不能省掉",
    "为什么一定要{X}",
    "需要{X}的原因",
)
HOW = (
    "怎样{A}",
    "怎么{A}",
    "如何{A}",
    "咋{A}",
    "请问怎么{A}",
    "{A}的方法",
    "{A}有哪些方法",
    "有什么办法{A}",
    "要{A}该怎么做",
    "想{A}怎么办",
    "教我{A}",
    "{A}有什么技巧",
)
WHY = (
    "{S}为什么{P}",
    "为什么{S}{P}",
    "{S}为啥{P}",
    "为啥{S}{P}",
    "{S}{P}是为什么",
    "{S}{P}的原因是什么",
    "{S}{P}是什么原因",
    "请解释{S}为什么{P}",
    "能讲讲{S}为什么{P}吗",
    "{S}{P}，这是为什么",
    "解释一下为什么{S}{P}",
)
WHY_PHYSICAL = ("{S}{P}的原理是什么", "{S}怎么会{P}")  # not for predicates starting with 要/会
DIFF = (
    "{A}和{B}有什么区别",
    "{A}和{B}的区别",
    "{A}与{B}有什么不同",
    "{A}跟{B}有啥区别",
    "{A}和{B}哪里不一样",
    "{A}和{B}一样吗",
    "{A}和{B}是一回事吗",
    "比较一下{A}和{B}",
    "{A}和{B}怎么区分",
    "{A}和{B}有什么差别",
    "{A}跟{B}差在哪",
    "{A} vs {B}",
    "说说{A}和{B}的不同",
)
DIFF_EN = ("difference between {A} and {B}",)
DESCRIBE = ("{C}，这是什么", "{C}说的是什么", "{C}叫什么", "{C}是哪个概念")
ASK_WRAPS = ("{Q}", "请问{Q}", "我想知道{Q}", "老师，{Q}", "{Q}呀", "问一下，{Q}")
REQUEST_WRAPS = ("{Q}", "老师，{Q}", "{Q}吧")  # for requests (帮我写…, 给我讲…): no 请问/我想知道
REQUEST = re.compile(r"^(帮|给|写|编|讲|用|把|推荐|提醒|请|能|可以|举|Please|Can|What|How)")

CLAUSE_SPLIT = re.compile(r"[，；。：！？“”《》（）]")
CLAUSE_LEAD = re.compile(r"^(所以|因为|因此|比如|例如|也就是|就是|即|并且|并|再|而且|而|但|则|它|这|从而|于是|同时)+")
DEFINES = ("就是", "也叫", "是", "即", "指", "叫")
CLAUSE_CHARS = (6, 28)


def answer_clauses(answer: str, names: Sequence[str] = ()) -> list[str]:
    """The descriptive clauses of an answer, for "X叫什么" questions built from the answer itself.

    "点积是两个向量对应位置相乘再求和，值越大…" -> ["两个向量对应位置相乘再求和", "值越大…"]:
    a leading name + 是/即/指 is cut (the question should describe, not name), and so are
    leading connectives (所以, 比如 ...). Clauses of 6-28 characters with mostly Chinese are kept."""
    out = []
    for raw in CLAUSE_SPLIT.split(answer):
        clause = CLAUSE_LEAD.sub("", raw.strip())
        for name in sorted(names, key=len, reverse=True):
            for word in DEFINES:
                if clause.startswith(name + word):
                    clause = clause[len(name + word) :]
                    break
        cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in clause)
        if CLAUSE_CHARS[0] <= len(clause) <= CLAUSE_CHARS[1] and cjk >= 0.6 * len(clause):
            out.append(clause)
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------- arithmetic
CALC = re.compile(r"^(\d+)\s*([×÷+\-])\s*(\d+)$")
OP_WORDS = {
    "×": ("乘", "乘以", "×", "*", "x", "乘上"),
    "÷": ("除以", "÷", "/"),
    "+": ("加", "加上", "+"),
    "-": ("减", "减去", "-"),
}
CALC_ENDS = ("等于多少", "是多少", "等于几", "得几", "得多少", "=?", "=", "等于？", "", "是几", "等于多少呀", "等于啥")
CALC_OPENINGS = ("", "", "", "算一下", "请计算", "帮我算算", "口算", "请问", "计算")
CALC_EN = {"×": "times", "÷": "divided by", "+": "plus", "-": "minus"}
DIGITS_CN = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """0-999 in Chinese numerals, the way a student writes them: 十二, 二十五, 一百二十, 一百零八."""
    if not 0 <= n <= 999:
        raise ValueError(f"chinese_number: {n} is out of range")
    if n < 10:
        return DIGITS_CN[n]
    if n < 20:
        return "十" + (DIGITS_CN[n % 10] if n % 10 else "")
    if n < 100:
        return DIGITS_CN[n // 10] + "十" + (DIGITS_CN[n % 10] if n % 10 else "")
    hundreds, rest = divmod(n, 100)
    head = DIGITS_CN[hundreds] + "百"
    if rest == 0:
        return head
    if rest < 10:
        return head + "零" + DIGITS_CN[rest]
    return head + (DIGITS_CN[rest // 10] + "十" + (DIGITS_CN[rest % 10] if rest % 10 else ""))


def parse_calc(calc: str) -> tuple[int, str, int, int]:
    """``"5×9"`` -> (5, "×", 9, 45). Division must come out even."""
    match = CALC.match(calc.strip())
    if not match:
        raise ValueError(f"calc {calc!r}: expected 'a×b', 'a÷b', 'a+b' or 'a-b'")
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    if op == "÷":
        if b == 0 or a % b:
            raise ValueError(f"calc {calc!r}: division must come out even")
        return a, op, b, a // b
    return a, op, b, {"×": a * b, "+": a + b, "-": a - b}[op]


def _calc_groups(calc: str) -> dict[str, list[str]]:
    a, op, b, _ = parse_calc(calc)
    orders = [(a, b), (b, a)] if op in "×+" and a != b else [(a, b)]
    groups: dict[str, list[str]] = {}
    for x, y in orders:
        for style in ("digits", "chinese", "mixed"):
            sx = chinese_number(x) if style == "chinese" else str(x)
            sy = chinese_number(y) if style != "digits" else str(y)
            for word in OP_WORDS[op]:
                if style == "chinese" and not ("\u4e00" <= word[0] <= "\u9fff"):
                    continue  # 五×九 is odd; 五乘九 is what people write
                key = f"{x}{op}{y}/{style}/{word}"
                groups[key] = [f"{opening}{sx}{word}{sy}{end}" for opening in CALC_OPENINGS for end in CALC_ENDS]
        groups[f"{x}{op}{y}/en"] = [f"what is {x} {CALC_EN[op]} {y}", f"{x} {CALC_EN[op]} {y}"]
    if op == "×" and a < 10 and b < 10:  # 口诀 style: 五九得几 (smaller number first)
        lo, hi = sorted((a, b))
        pair = chinese_number(lo) + chinese_number(hi)
        groups["koujue"] = [pair + end for end in ("得几", "得多少", "是多少", "等于几")]
    return groups


# ---------------------------------------------------------------- one concept's candidates
def _is_latin(text: str) -> bool:
    return all(ord(ch) < 128 for ch in text) and any(ch.isalpha() for ch in text)


def _fill(templates: Iterable[str], **slots: str) -> list[str]:
    # a slot ending in 的 before a template's 的 (是蓝色的 + 的原因) keeps one 的
    return [template.format(**slots).replace("的的", "的") for template in templates]


def _wrap(question: str) -> list[str]:
    """A hand-written question as is, with a polite opening, or with a final particle."""
    wraps = REQUEST_WRAPS if REQUEST.match(question) or not _has_cjk(question) else ASK_WRAPS
    if not _has_cjk(question):
        wraps = ("{Q}",)
    ends_with_particle = question.endswith(("吗", "呢", "吧", "呀", "啊", "?", "？", "。"))
    return [w.format(Q=question) for w in wraps if not (ends_with_particle and w.endswith(("呀", "吧")))]


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def candidate_groups(concept: Mapping[str, object], topic: str, answer: str = "") -> dict[str, list[str]]:
    """All generated questions of one concept, grouped (see the module docstring).

    ``concept`` holds the optional generator fields of one YAML concept. With ``answer``
    (not for arithmetic), each descriptive clause of the answer also gives a "describe/"
    group: "两个向量对应位置相乘再求和叫什么"."""
    groups: dict[str, list[str]] = {}
    names: Sequence[str] = concept.get("names") or ()  # type: ignore[assignment]
    kinds: Sequence[str] = concept.get("kind", ["term"] if names else [])  # type: ignore[assignment]
    for name in names:
        if "term" in kinds:
            bank = list(TERM_BASIC)
            if topic in TECH_TOPICS:
                bank += TERM_TECH
            if _is_latin(name):
                bank += TERM_EN
            groups[f"term/{name}"] = _fill(bank, X=name)
        if "need" in kinds:
            groups[f"need/{name}"] = _fill(NEED, X=name)
    why = concept.get("why")
    if why:
        subjects = why.get("subject") or [""]  # type: ignore[union-attr]
        for predicate in why["predicate"]:  # type: ignore[index]
            bank = list(WHY)
            if topic not in TECH_TOPICS and not predicate.startswith(("要", "会")):
                bank += WHY_PHYSICAL
            groups[f"why/{predicate}"] = [q for s in subjects for q in _fill(bank, S=s, P=predicate)]
    for action in concept.get("how") or ():  # type: ignore[union-attr]
        groups[f"how/{action}"] = _fill(HOW, A=action)
    diff = concept.get("diff")
    if diff:
        for a in diff["a"]:  # type: ignore[index]
            for b in diff["b"]:  # type: ignore[index]
                bank = list(DIFF) + (list(DIFF_EN) if _is_latin(a) and _is_latin(b) else [])
                groups[f"diff/{a}/{b}"] = _fill(bank, A=a, B=b) + _fill(bank, A=b, B=a)
    for ask in concept.get("asks") or ():  # type: ignore[union-attr]
        if "{X}" in ask:
            if not names:
                raise ValueError(f"ask {ask!r} uses {{X}} but the concept has no names")
            for name in names:
                groups[f"ask/{ask}/{name}"] = _wrap(ask.replace("{X}", name))
        else:
            groups[f"ask/{ask}"] = _wrap(ask)
    calc = concept.get("calc")
    if calc:
        groups.update(_calc_groups(str(calc)))
    elif answer:
        for clause in answer_clauses(answer, names):
            groups[f"describe/{clause}"] = _fill(DESCRIBE, C=clause)
    return groups


IMPERATIVE = re.compile(
    r"^(老师，)?(请解释|解释|请介绍|介绍|给我|讲讲|简单说说|科普|比较|说说|教我|举个|用一句话|通俗地|想了解|关于|"
    r"请计算|计算|口算|算一下|帮|写|编|推荐|提醒|把|用|讲一个|区分)"
)


def punctuate(question: str, rng: random.Random) -> str:
    """Give a generated question the ending people type: none, ？ or ?; 。 or none for requests."""
    if question[-1] in "?？。!！" or question.endswith("吧"):
        return question
    if IMPERATIVE.match(question):
        return question + rng.choice(("", "", "。"))
    return question + rng.choice(("", "？", "？", "?"))


def seeded_rng(*parts: str) -> random.Random:
    """A random generator seeded from text only (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def pick(groups: Mapping[str, Sequence[str]], count: int, seed: str, key=lambda text: text) -> list[str]:
    """Up to ``count`` distinct questions, taking the groups round-robin in a seeded order.

    Inside a group the order is seeded too, so each round adds one new template per group.
    ``key`` maps a question to its identity (e.g. the leakage normalisation): two questions
    with the same key are never both picked."""
    rng = seeded_rng("pick", seed)
    queues = []
    for name in sorted(groups):
        items = list(dict.fromkeys(groups[name]))
        rng.shuffle(items)
        queues.append(items)
    rng.shuffle(queues)
    picked: list[str] = []
    seen: set[str] = set()
    while len(picked) < count and any(queues):
        for queue in queues:
            while queue:
                question = queue.pop()
                if key(question) not in seen:
                    seen.add(key(question))
                    picked.append(question)
                    break
            if len(picked) >= count:
                break
    return picked
