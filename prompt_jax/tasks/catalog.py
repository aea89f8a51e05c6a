"""The registered tasks: the 17 of Prompt-Transferability (Su et al. 2022) plus Rotten
Tomatoes, RTE, CB, AG News and TREC.

Local file layouts follow each public release (GLUE tsv, SuperGLUE jsonl, the MSR, SemEval,
TweetEval, TREC, SQuAD, NQ-Open, SAMSum, Multi-News, ETHICS and ERASER releases); the copies in
../shared/data use these layouts. TFDS label names are those of the builders' ClassLabel features.
"""

from __future__ import annotations

from prompt_jax.tasks.registry import CARVED, LocalSource, TaskSpec, TfdsSource, register

ACC = ("accuracy",)
ACC_F1 = ("accuracy", "f1")
QA = ("exact_match", "f1")
ROUGE = ("rouge1", "rouge2", "rougeL")

SENT2 = ("negative", "positive")
SENT3 = ("negative", "neutral", "positive")
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")


def _names(labels: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    return tuple((label, i) for i, label in enumerate(labels))


def _digits(n: int, start: int = 0) -> tuple[tuple[str, int], ...]:
    return tuple((str(i + start), i) for i in range(n))


def _tfds_carved(name: str, **fields) -> TfdsSource:
    """A TFDS builder with train and test only: validation is the last 10% of train."""
    return TfdsSource(name, (("train", "train[:90%]"), ("validation", "train[90%:]"),
                             ("test", "test")), **fields)


def _review(t5_prefix: str, t5_field: str = "sentence") -> tuple[tuple[str, str], ...]:
    return (("t5", f"{t5_prefix} {t5_field}: {{text_a}}"),
            ("causal", "Review: {text_a}\nSentiment:"))


def _nli(t5: str) -> tuple[tuple[str, str], ...]:
    return (("t5", t5), ("causal", "Premise: {text_a}\nHypothesis: {text_b}\n"
                                   "Does the premise entail the hypothesis? Answer:"))


def _absa(name: str, prefix: str) -> TaskSpec:
    return TaskSpec(
        name=name, family="sentiment", labels=SENT3, verbalizers=SENT3, t5_verbalizers=SENT3,
        metric_names=ACC, pair=True, label_aliases=(("-1", 0), ("0", 1), ("1", 2)) + _names(SENT3),
        templates=(("t5", f"{name} sentence: {{text_a}} aspect: {{text_b}}"),
                   ("causal", "Review: {text_a}\nAspect: {text_b}\nSentiment:")),
        local=LocalSource("absa", (("train", (f"semeval14_absa/{prefix}_Train.xml.seg",)),
                                   ("validation", CARVED),
                                   ("test", (f"semeval14_absa/{prefix}_Test_Gold.xml.seg",)))),
        tfds=None, description=f"SemEval-2014 {name} aspect polarity")


TASKS = [
    # --- sentiment ---
    TaskSpec(
        name="sst2", family="sentiment", labels=SENT2, verbalizers=SENT2, t5_verbalizers=SENT2,
        metric_names=ACC, templates=_review("sst2"), pair=False,
        label_aliases=_digits(2) + _names(SENT2),
        local=LocalSource("tsv", (("train", ("glue_sst2/train.tsv",)),
                                  ("validation", ("glue_sst2/validation.tsv",))),
                          (("text_a", "sentence"), ("label", "label"))),
        tfds=TfdsSource("glue/sst2", (("train", "train"), ("validation", "validation")),
                        "sentence", label="label", label_names=SENT2),
        description="SST-2 (GLUE)"),
    TaskSpec(
        name="imdb", family="sentiment", labels=SENT2, verbalizers=SENT2, t5_verbalizers=SENT2,
        metric_names=ACC, templates=_review("imdb", "review"), pair=False,
        label_aliases=_digits(2) + _names(SENT2) + (("neg", 0), ("pos", 1)),
        local=LocalSource("jsonl", (("train", ("imdb/train.jsonl.gz",)), ("validation", CARVED),
                                    ("test", ("imdb/test.jsonl.gz",))),
                          (("text_a", "text"), ("label", "label"))),
        tfds=_tfds_carved("imdb_reviews", text_a="text", label="label",
                          label_names=("neg", "pos")),
        description="IMDB reviews (aclImdb v1)"),
    _absa("laptop", "Laptops"),
    _absa("restaurant", "Restaurants"),
    TaskSpec(
        name="movie_rationales", family="sentiment", labels=SENT2, verbalizers=SENT2,
        t5_verbalizers=SENT2, metric_names=ACC, templates=_review("movie_rationales", "review"),
        pair=False, label_aliases=_names(SENT2) + (("NEG", 0), ("POS", 1)),
        local=LocalSource("eraser", (("train", ("movies/train.jsonl",)),
                                     ("validation", ("movies/val.jsonl",)),
                                     ("test", ("movies/test.jsonl",)))),
        tfds=TfdsSource("movie_rationales", (("train", "train"), ("validation", "validation"),
                                             ("test", "test")),
                        "review", label="label", label_names=("NEG", "POS")),
        description="ERASER movie reviews (rationales release)"),
    TaskSpec(
        name="tweeteval", family="sentiment", labels=SENT3, verbalizers=SENT3,
        t5_verbalizers=SENT3, metric_names=ACC, pair=False,
        templates=(("t5", "tweeteval tweet: {text_a}"), ("causal", "Tweet: {text_a}\nSentiment:")),
        label_aliases=_digits(3) + _names(SENT3),
        local=LocalSource("parallel", tuple(
            (split, (f"tweeteval/sentiment/{f}_text.txt", f"tweeteval/sentiment/{f}_labels.txt"))
            for split, f in (("train", "train"), ("validation", "val"), ("test", "test")))),
        tfds=None, description="TweetEval sentiment"),
    # --- NLI ---
    TaskSpec(
        name="mnli", family="nli", labels=NLI3, verbalizers=("yes", "maybe", "no"),
        t5_verbalizers=NLI3, metric_names=ACC, pair=True, label_aliases=_names(NLI3),
        templates=_nli("mnli hypothesis: {text_b} premise: {text_a}"),
        local=LocalSource("jsonl", (("train", ("mnli/train.jsonl",)),
                                    ("validation", ("mnli/dev.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("glue/mnli", (("train", "train"), ("validation", "validation_matched")),
                        "premise", "hypothesis", "label", NLI3),
        description="MultiNLI (validation = dev-matched)"),
    TaskSpec(
        name="qnli", family="nli", labels=NLI2, verbalizers=("yes", "no"), t5_verbalizers=NLI2,
        metric_names=ACC, pair=True, label_aliases=_names(NLI2),
        templates=(("t5", "qnli question: {text_a} sentence: {text_b}"),
                   ("causal", "Question: {text_a}\nSentence: {text_b}\n"
                              "Does the sentence answer the question? Answer:")),
        local=LocalSource("tsv", (("train", ("glue_qnli/train.tsv",)),
                                  ("validation", ("glue_qnli/validation.tsv",))),
                          (("text_a", "question"), ("text_b", "sentence"), ("label", "label"))),
        tfds=TfdsSource("glue/qnli", (("train", "train"), ("validation", "validation")),
                        "question", "sentence", "label", NLI2),
        description="QNLI (GLUE)"),
    TaskSpec(
        name="snli", family="nli", labels=NLI3, verbalizers=("yes", "maybe", "no"),
        t5_verbalizers=NLI3, metric_names=ACC, pair=True, label_aliases=_names(NLI3),
        templates=_nli("snli hypothesis: {text_b} premise: {text_a}"),
        local=LocalSource("jsonl", (("train", ("snli/train.jsonl",)),
                                    ("validation", ("snli/dev.jsonl",)),
                                    ("test", ("snli/test.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("snli", (("train", "train"), ("validation", "validation"),
                                 ("test", "test")), "premise", "hypothesis", "label", NLI3),
        description="SNLI"),
    # --- ethical judgement (ETHICS release csv: label 1 = reasonable) ---
    TaskSpec(
        name="deontology", family="ethics", labels=("unreasonable", "reasonable"),
        verbalizers=("no", "yes"), t5_verbalizers=("unreasonable", "reasonable"),
        metric_names=ACC, pair=True, label_aliases=_digits(2),
        templates=(("t5", "deontology scenario: {text_a} excuse: {text_b}"),
                   ("causal", "Scenario: {text_a}\nExcuse: {text_b}\n"
                              "Is the excuse reasonable? Answer:")),
        local=LocalSource("csv", (("train", ("ethics/deontology/deontology_train.csv",)),
                                  ("validation", CARVED),
                                  ("test", ("ethics/deontology/deontology_test.csv",))),
                          (("text_a", "scenario"), ("text_b", "excuse"), ("label", "label"))),
        tfds=None, description="ETHICS deontology"),
    TaskSpec(
        name="justice", family="ethics", labels=("unreasonable", "reasonable"),
        verbalizers=("no", "yes"), t5_verbalizers=("unreasonable", "reasonable"),
        metric_names=ACC, pair=False, label_aliases=_digits(2),
        templates=(("t5", "justice scenario: {text_a}"),
                   ("causal", "Scenario: {text_a}\nIs this reasonable? Answer:")),
        local=LocalSource("csv", (("train", ("ethics/justice/justice_train.csv",)),
                                  ("validation", CARVED),
                                  ("test", ("ethics/justice/justice_test.csv",))),
                          (("text_a", "scenario"), ("label", "label"))),
        tfds=None, description="ETHICS justice"),
    # --- paraphrase ---
    TaskSpec(
        name="qqp", family="paraphrase", labels=("not_duplicate", "duplicate"),
        verbalizers=("no", "yes"), t5_verbalizers=("not_duplicate", "duplicate"),
        metric_names=ACC_F1, pair=True,
        label_aliases=_digits(2) + _names(("not_duplicate", "duplicate")),
        templates=(("t5", "qqp question1: {text_a} question2: {text_b}"),
                   ("causal", "Question 1: {text_a}\nQuestion 2: {text_b}\n"
                              "Do both questions ask the same thing? Answer:")),
        local=LocalSource("tsv", (("train", ("glue_qqp/train.tsv",)),
                                  ("validation", ("glue_qqp/dev.tsv",))),
                          (("text_a", "question1"), ("text_b", "question2"),
                           ("label", "is_duplicate"))),
        tfds=TfdsSource("glue/qqp", (("train", "train"), ("validation", "validation")),
                        "question1", "question2", "label", ("not_duplicate", "duplicate")),
        description="Quora Question Pairs (GLUE)"),
    TaskSpec(
        name="mrpc", family="paraphrase", labels=("not_equivalent", "equivalent"),
        verbalizers=("no", "yes"), t5_verbalizers=("not_equivalent", "equivalent"),
        metric_names=ACC_F1, pair=True,
        label_aliases=_digits(2) + _names(("not_equivalent", "equivalent")),
        templates=(("t5", "mrpc sentence1: {text_a} sentence2: {text_b}"),
                   ("causal", "Sentence 1: {text_a}\nSentence 2: {text_b}\n"
                              "Do both sentences mean the same thing? Answer:")),
        local=LocalSource("msr", (("train", ("msr_paraphrase/msr_paraphrase_train.txt",)),
                                  ("validation", CARVED),
                                  ("test", ("msr_paraphrase/msr_paraphrase_test.txt",)))),
        tfds=TfdsSource("glue/mrpc", (("train", "train"), ("validation", "validation")),
                        "sentence1", "sentence2", "label", ("not_equivalent", "equivalent")),
        description="MRPC (MSR paraphrase corpus)"),
    # --- question answering (generation; references = all gold answers) ---
    TaskSpec(
        name="squad", family="qa", labels=(), verbalizers=(), t5_verbalizers=(),
        metric_names=QA, pair=True, label_aliases=(),
        templates=(("t5", "squad question: {text_a} context: {text_b}"),
                   ("causal", "Context: {text_b}\nQuestion: {text_a}\nAnswer:")),
        local=LocalSource("squad", (("train", ("squad/train-v1.1.json",)),
                                    ("validation", ("squad/dev-v1.1.json",)))),
        tfds=TfdsSource("squad/v1.1", (("train", "train"), ("validation", "validation")),
                        "question", "context", references="answers/text"),
        description="SQuAD v1.1"),
    TaskSpec(
        name="nq_open", family="qa", labels=(), verbalizers=(), t5_verbalizers=(),
        metric_names=QA, pair=False, label_aliases=(),
        templates=(("t5", "nq question: {text_a}"), ("causal", "Question: {text_a}\nAnswer:")),
        local=LocalSource("jsonl", (("train", ("nq_open/NQ-open.train.jsonl",)),
                                    ("validation", ("nq_open/NQ-open.dev.jsonl",))),
                          (("text_a", "question"), ("references", "answer"))),
        tfds=TfdsSource("natural_questions_open", (("train", "train"),
                                                   ("validation", "validation")),
                        "question", references="answer"),
        description="Natural Questions Open"),
    # --- summarization (generation) ---
    TaskSpec(
        name="multi_news", family="summarization", labels=(), verbalizers=(), t5_verbalizers=(),
        metric_names=ROUGE, pair=False, label_aliases=(),
        templates=(("t5", "summarize: {text_a}"), ("causal", "Article: {text_a}\nSummary:")),
        local=LocalSource("src_tgt", tuple(
            (split, (f"multi_news/{f}.src", f"multi_news/{f}.tgt"))
            for split, f in (("train", "train"), ("validation", "val"), ("test", "test")))),
        tfds=TfdsSource("multi_news", (("train", "train"), ("validation", "validation"),
                                       ("test", "test")), "document", references="summary"),
        description="Multi-News"),
    TaskSpec(
        name="samsum", family="summarization", labels=(), verbalizers=(), t5_verbalizers=(),
        metric_names=ROUGE, pair=False, label_aliases=(),
        templates=(("t5", "summarize: {text_a}"), ("causal", "Dialogue: {text_a}\nSummary:")),
        local=LocalSource("samsum", (("train", ("samsum/train.json",)),
                                     ("validation", ("samsum/val.json",)),
                                     ("test", ("samsum/test.json",)))),
        tfds=TfdsSource("samsum", (("train", "train"), ("validation", "validation"),
                                   ("test", "test")), "dialogue", references="summary"),
        description="SAMSum dialogue summaries"),
    # --- the five extra tasks ---
    TaskSpec(
        name="rotten_tomatoes", family="sentiment", labels=SENT2, verbalizers=SENT2,
        t5_verbalizers=SENT2, metric_names=ACC, templates=_review("rotten_tomatoes"),
        pair=False, label_aliases=_names(SENT2),
        local=LocalSource("jsonl", (("train", ("rotten_tomatoes/train.jsonl",)),
                                    ("validation", CARVED),
                                    ("test", ("rotten_tomatoes/test.jsonl",))),
                          (("text_a", "input"), ("label", "output"))),
        tfds=None, description="Rotten Tomatoes movie review polarity"),
    TaskSpec(
        name="rte", family="nli", labels=NLI2, verbalizers=("yes", "no"), t5_verbalizers=NLI2,
        metric_names=ACC, pair=True, label_aliases=_names(NLI2),
        templates=_nli("rte sentence1: {text_a} sentence2: {text_b}"),
        local=LocalSource("jsonl", (("train", ("superglue_rte/train.jsonl",)),
                                    ("validation", ("superglue_rte/val.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("super_glue/rte", (("train", "train"), ("validation", "validation")),
                        "premise", "hypothesis", "label", NLI2),
        description="RTE (SuperGLUE)"),
    TaskSpec(
        name="cb", family="nli", labels=NLI3, verbalizers=("yes", "maybe", "no"),
        t5_verbalizers=NLI3, metric_names=ACC, pair=True, label_aliases=_names(NLI3),
        templates=_nli("cb hypothesis: {text_b} premise: {text_a}"),
        local=LocalSource("jsonl", (("train", ("superglue_cb/train.jsonl",)),
                                    ("validation", ("superglue_cb/val.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("super_glue/cb", (("train", "train"), ("validation", "validation")),
                        "premise", "hypothesis", "label",
                        ("entailment", "contradiction", "neutral")),
        description="CommitmentBank (SuperGLUE)"),
    TaskSpec(
        name="ag_news", family="topic", labels=("World", "Sports", "Business", "Sci/Tech"),
        verbalizers=("world", "sports", "business", "science"),
        t5_verbalizers=("world", "sports", "business", "science"), metric_names=ACC, pair=True,
        label_aliases=_digits(4, start=1) + _names(("World", "Sports", "Business", "Sci/Tech")),
        templates=(("t5", "ag_news title: {text_a} description: {text_b}"),
                   ("causal", "Title: {text_a}\nArticle: {text_b}\nTopic:")),
        local=LocalSource("csv", (("train", ("ag_news/train.csv",)), ("validation", CARVED),
                                  ("test", ("ag_news/test.csv",))),
                          (("text_a", "Title"), ("text_b", "Description"),
                           ("label", "Class Index"))),
        tfds=_tfds_carved("ag_news_subset", text_a="title", text_b="description", label="label",
                          label_names=("World", "Sports", "Business", "Sci/Tech")),
        description="AG News topics (csv labels 1-4)"),
    TaskSpec(
        name="trec", family="question", labels=("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
        verbalizers=("abbreviation", "description", "entity", "human", "location", "number"),
        t5_verbalizers=("abbreviation", "description", "entity", "human", "location", "number"),
        metric_names=ACC, pair=False,
        label_aliases=_names(("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")),
        templates=(("t5", "trec question: {text_a}"),
                   ("causal", "Question: {text_a}\nAnswer type:")),
        local=LocalSource("prefixed", (("train", ("trec/train.txt",)), ("validation", CARVED),
                                       ("test", ("trec/test.txt",))), (("sep", ":"),)),
        tfds=_tfds_carved("trec", text_a="text", label="label-coarse",
                          label_names=("DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC")),
        description="TREC question type (coarse)"),
]

for _spec in TASKS:
    register(_spec)
