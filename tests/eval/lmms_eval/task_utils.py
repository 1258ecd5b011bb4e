"""lmms-eval task functions of the offline test task (copied beside its YAML as ``utils.py``, which it names)."""


def doc_to_visual(doc):
    if doc["broken"]:  # the test's failed sample: lmms-eval's doc_to_visual raising for one document
        raise ValueError("unreadable test image")
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip().lower() == doc["answer"].strip().lower())}


def doc_to_choice(doc):
    return list(doc["choices"])
