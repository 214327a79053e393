"""Standard names for the anatomy our models segment: SNOMED CT codes as Slicer's terminology lists give them, and
Slicer's recommended display colours, so a liver arrives in Slicer as "Anatomical Structure / Liver" in liver colour.

Facts from Slicer/Slicer @ 583e9b3, ``Modules/Loadable/Terminologies/Resources/``:
``SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json`` (codes, ``recommendedDisplayRGBValue``) and
``SegmentationCategoryTypeModifier-DICOM-Master.json`` (the inferior vena cava, which has no colour there; its colour
is the one SlicerTotalSegmentator @ 6a82370 gives). Laterality is a type modifier (SCT 24028007 Right, 7771000 Left),
as in those lists. The dict layout is slicerio's (``terminology_entry_from_string``), which writes Slicer's
``TerminologyEntry`` tag.
"""

from __future__ import annotations

from swinssl.labels.table import plain_name

GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
CATEGORY = ["SCT", "123037004", "Anatomical Structure"]
RIGHT = ["SCT", "24028007", "Right"]
LEFT = ["SCT", "7771000", "Left"]

# (names as models spell them, the first one Slicer's (its list's 3dSlicerLabel, else the code meaning), SCT code,
#  code meaning, laterality modifier, RGB 0..255, terminology context)
# Colours are Slicer's except where Slicer gives touching organs near-identical ones (liver/stomach, liver/kidney,
# liver/heart, colon/small bowel, colon/bladder): kidney, stomach, small bowel, heart and bladder differ from each
# neighbour by a CIE76 difference of at least 25 (Testing/test_web_viewing.py); their codes are unchanged.
_STRUCTURES = [
    (("liver",), "10200004", "Liver", None, (221, 130, 101), GENERAL_ANATOMY),
    (("spleen",), "78961009", "Spleen", None, (157, 108, 162), GENERAL_ANATOMY),
    (("right kidney", "kidney right"), "64033007", "Kidney", RIGHT, (150, 60, 60), GENERAL_ANATOMY),
    (("left kidney", "kidney left", "left kideny"), "64033007", "Kidney", LEFT, (150, 60, 60), GENERAL_ANATOMY),  # sic: the BTCV bundle
    (("stomach",), "69695003", "Stomach", None, (240, 170, 200), GENERAL_ANATOMY),
    (("aorta",), "15825003", "Aorta", None, (224, 97, 76), GENERAL_ANATOMY),
    (("pancreas",), "15776009", "Pancreas", None, (249, 180, 111), GENERAL_ANATOMY),
    (("gallbladder", "gall bladder"), "28231008", "Gallbladder", None, (139, 150, 98), GENERAL_ANATOMY),
    (("esophagus", "oesophagus"), "32849002", "Esophagus", None, (211, 171, 143), GENERAL_ANATOMY),
    (("Inferior vena cava", "ivc"), "64131007", "Inferior vena cava", None, (0, 151, 206), DICOM_MASTER),
    (("right adrenal gland", "adrenal gland right"), "23451007", "Adrenal gland", RIGHT, (249, 186, 150), GENERAL_ANATOMY),
    (("left adrenal gland", "adrenal gland left"), "23451007", "Adrenal gland", LEFT, (249, 186, 150), GENERAL_ANATOMY),
    (("duodenum",), "38848004", "Duodenum", None, (255, 253, 229), GENERAL_ANATOMY),
    (("urinary bladder", "bladder"), "89837001", "Bladder", None, (240, 135, 120), GENERAL_ANATOMY),
    (("heart",), "80891009", "Heart", None, (180, 40, 70), GENERAL_ANATOMY),
    (("right lung", "lung right"), "39607008", "Lung", RIGHT, (197, 165, 145), GENERAL_ANATOMY),
    (("left lung", "lung left"), "39607008", "Lung", LEFT, (197, 165, 145), GENERAL_ANATOMY),
    (("colon",), "71854001", "Colon", None, (204, 168, 143), GENERAL_ANATOMY),
    (("small bowel", "small intestine"), "30315005", "Small Intestine", None, (230, 190, 90), GENERAL_ANATOMY),
]


def _terminology(code: str, meaning: str, modifier: list[str] | None, context: str) -> dict:
    entry = {"contextName": context, "category": list(CATEGORY), "type": ["SCT", code, meaning], "anatomicContextName": ANATOMIC_CONTEXT}
    if modifier:
        entry["typeModifier"] = list(modifier)
    return entry


KNOWN: dict[str, tuple[tuple[float, float, float], dict]] = {
    plain_name(name): (tuple(round(c / 255, 4) for c in rgb), _terminology(code, meaning, modifier, context))
    for names, code, meaning, modifier, rgb, context in _STRUCTURES for name in names
}


SLICER_NAMES: dict[str, str] = {plain_name(alias): names[0] for names, *_ in _STRUCTURES for alias in names}


def standard_name(name: str) -> str | None:
    """The name Slicer gives a known structure when its terminology is picked (``qSlicerTerminologyNavigatorWidget::
    nameFromTerminology``: the list's 3dSlicerLabel, e.g. "left kidney" for a model's "Left Kideny"), else None."""
    return SLICER_NAMES.get(plain_name(name))


def shown_name(name: str) -> str:
    """The name the faces give a model's segment (:func:`swinssl_slicer.mrml_io.use_standard_anatomy`): Slicer's name
    for a known structure, else the model's own."""
    return standard_name(name) or name


def standard_anatomy(name: str) -> tuple[tuple[float, float, float], dict] | None:
    """(Slicer's colour as RGB 0..1, slicerio terminology dict) of a known structure, matched by name
    (case, blanks and '_' ignored), else None."""
    return KNOWN.get(plain_name(name))
