"""Construction of every control of the ClipSAM widget, and all their tooltips, in one place.

Nothing here reacts to anything: :func:`build_controls` lays the controls out and returns them in a
:class:`Controls` record; the behaviour modules connect to them.
"""
from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..config import PRESETS, preset_help
from ..export import FORMATS
from .settings import BACKENDS, DEVICES

TOOLTIPS = {
    "image": "Image layer to segment. Follows the selected layer; ClipSAM's own output layers are not listed.",
    "across": "Folder mutual scoring (no references, no training): score each image against the others — the "
              "viewer's image layers, or the frames of the chosen stack (at least 5).",
    "across_run": "Score every image of the chosen set against the others and show each one's masks (Cancel stops).",
    "all_frames": "For an N×H×W(×C) stack: segment every frame (checked) or only the frame shown now.",
    "object_name": "What the image shows, in a few words (e.g. 'metal plate', 'pcb'). CLIP compares image "
                   "patches with 'a photo of a damaged <object>' and similar prompts.",
    "preset": preset_help() + ". The default suits a CPU; the others are slow "
              "there. Weights are downloaded once. Changing it rebuilds the engine on the next Run.",
    "umci": "Optional trained UMCI checkpoint (.pt). Empty: the training-free rough map (lower quality). "
            "Changing it rebuilds the engine on the next Run.",
    "umci_browse": "Choose a UMCI checkpoint file.",
    "clip_weights": "Local CLIP weights instead of the download: a checkpoint file for the preset's model (e.g. "
                    "ViT-L-14-336px.pt) or a folder with open_clip_config.json and weights. Empty: download once.",
    "clip_browse": "Choose a CLIP weights file (Shift-click: a local-dir folder).",
    "sam_weights": "Local SAM weights instead of the download: a checkpoint for the preset's SAM (e.g. "
                   "sam_vit_b_01ec64.pth) or a folder with sam_config.json and sam.pth. Empty: download once.",
    "sam_browse": "Choose a SAM checkpoint file (Shift-click: a local-dir folder).",
    "backend": "Encoder backend. auto: OpenVINO on the CPU when installed (converted once, then 1.5–4× faster "
               "encoders), torch otherwise and on a GPU. Changing it rebuilds the engine on the next Run.",
    "device": "auto: the GPU when there is one, else the CPU. Changing it rebuilds the engine on the next Run.",
    "ref_layers": "Use the image layers selected in the layer list as normal references: defect-free parts, taken "
                  "the same way. The next Run fuses a few-shot map (nearest reference patch) into the rough map.",
    "ref_folder": "Add every image of a folder of defect-free parts as normal references.",
    "ref_clear": "Stop using normal references (zero-shot rough maps again).",
    "aligned": "Folder mutual scoring (Score across, the folder review) compares each patch only with the other "
               "images' patches near its place (mutual_window 2): for parts photographed in a fixture, where a "
               "missing part would otherwise look like background. Leave off for textures and loose objects.",
    "ref_info": "The normal references the next Run uses (none: zero-shot). In a folder review, Alt+G accepts a "
                "good image with no objects and adds it here.",
    "prompt_threshold": "τ_prompt: the rough map is cut at this probability to find defect regions that become "
                        "SAM prompts. Lower it when nothing is found. Applies from the next Run.",
    "tau_suggest": "Set τ_prompt from the chosen image's rough map (after a Run): the strongest tenth of its range "
                   "becomes prompt regions.",
    "tau_preview": "Show the rough map's pixels at or above τ_prompt as outlines (a 'τ_prompt preview' layer), "
                   "redrawn as you change τ_prompt: where the next Run looks for prompt regions.",
    "mask_threshold": "τ_mask: the final map (rough and SAM maps blended) is cut at this value to make the masks. "
                      "Applies from the next Run or Refine.",
    "alpha": "α: weight of CLIP's rough map in the final map (1 − α goes to SAM's masks). "
             "Applies from the next Run or Refine.",
    "run": "Segment the image (or the current frame / all frames). The engine is created on the first Run.",
    "cancel": "Stop the running job; nothing half-made is added to the viewer.",
    "refine": "Re-make the masks from the points and boxes now in the prompts and boxes layers (SAM decoder "
              "only, fast; key R on the prompts layer). Edits to those layers refine automatically.",
    "flip": "Switch the selected prompt points between positive and negative (key F on the prompts layer).",
    "negative": "Checked: points you place are negative (background: 'not this'); unchecked: positive (the "
                "defect). Key N on the prompts layer switches; F flips points already placed. Choosing another "
                "image turns it off.",
    "delete_prompts": "Delete the selected points and boxes (the Delete key does the same on the canvas).",
    "delete_object": "Delete the object whose label is selected in the masks layer (its pixels and its prompts). "
                     "Ctrl+Z on the masks layer brings the pixels back.",
    "lock_object": "Lock (commit) the object whose label is selected in the masks layer: no refine or Run changes "
                   "its pixels again, and its prompts are removed. On a locked object the button reads Unlock object.",
    "discard": "Discard your hand corrections in the shown frame: put back ClipSAM's last masks and unlock its "
               "objects (Ctrl+Z undoes it).",
    "progress": "Progress of the running job.",
    "status": "What the widget is doing, and errors you can act on.",
    "classes": "Your defect classes. Double-click to rename. New instances get the selected class.",
    "class_add": "Add a class.",
    "class_remove": "Remove the selected class (instances keep their class name until reassigned).",
    "class_assign": "Give the selected class to the label id selected in the masks layer (pick it with the "
                    "masks layer's colour picker: a click on the object).",
    "objects": "The objects of the shown frame: click a row to select that label (Delete/Lock object act on it); "
               "choose its class in the menu.",
    "colour_by_class": "Colour the masks by class (one colour per class) instead of one colour per object.",
    "export_dir": "Dataset folder the pseudo-labels are written into (created if missing).",
    "export_browse": "Choose the export folder.",
    "format_mvtec": "masks/<name>_mask.png: binary 0/255 masks (MVTec-AD style).",
    "format_tiff": "labels/<name>.tif + .json: 16-bit instance ids and their classes.",
    "format_coco": "coco/annotations.json: instances as RLE masks, shared by all images of the folder.",
    "format_yolo": "yolo/labels/<name>.txt + yolo/data.yaml: YOLO segmentation polygons.",
    "overwrite": "Replace this image's files if they exist (otherwise they are kept and reported as skipped). "
                 "Off again in every new session.",
    "keep_original": "The dataset's images are 8-bit, mapped as ClipSAM saw them (the layer's contrast limits); "
                     "tick to also keep a 16-bit (or float) image as it was, in originals/.",
    "export": "Export the masks of the chosen image (per frame for a stack: <name>_f003) with their classes, "
              "the prompts and whether you edited them by hand.",
    "qa_input": "Folder of images to review (read only).",
    "qa_output": "Folder for the accepted pseudo-labels and the review manifest (resumable).",
    "qa_browse": "Choose a folder.",
    "qa_open": "Open the review: resumes at the first image without a verdict and runs ClipSAM on it.",
    "qa_progress": "Position in the folder and the verdicts so far.",
    "qa_verdict": "The current image and its verdict (undecided, accepted, rejected or skipped), and what the "
                  "last verdict did (files written, labels replaced).",
    "qa_accept": "Export the current masks with their classes and go to the next image (Alt+A). Labels saved "
                 "before for this image are replaced only with 'overwrite existing files' ticked.",
    "qa_reject": "Mark the image as rejected (no labels) and go to the next image (Alt+R).",
    "qa_skip": "Mark the image as skipped (seen, no decision) and go to the next image (Alt+D).",
    "qa_good": "Good part (Alt+G): accept this image with no objects and add it to the normal references.",
    "qa_adapt": "Train the UMCI head on the accepted labels in the Labels folder (background; Cancel stops it). The "
                "checkpoint is saved there (never over another) and the next images use it.",
    "qa_close": "Close the review: its keys are unbound; verdicts and labels stay in the labels folder.",
    "qa_previous": "Go back one image without a verdict change (Alt+Left).",
    "qa_next": "Go to the next image without a verdict change (Alt+Right).",
}


@dataclass
class Controls:
    """Every control of the widget (built by :func:`build_controls`)."""

    tabs: QTabWidget
    image: QComboBox
    all_frames: QCheckBox
    across: QComboBox
    across_run: QPushButton
    object_name: QLineEdit
    preset: QComboBox
    umci: QLineEdit
    umci_browse: QPushButton
    clip_weights: QLineEdit
    clip_browse: QPushButton
    sam_weights: QLineEdit
    sam_browse: QPushButton
    device: QComboBox
    backend: QComboBox
    ref_layers: QPushButton
    ref_folder: QPushButton
    ref_clear: QPushButton
    ref_info: QLabel
    aligned: QCheckBox
    prompt_threshold: QDoubleSpinBox
    tau_suggest: QPushButton
    tau_preview: QCheckBox
    mask_threshold: QDoubleSpinBox
    alpha: QDoubleSpinBox
    run: QPushButton
    cancel: QPushButton
    refine: QPushButton
    flip: QPushButton
    negative: QPushButton
    delete_prompts: QPushButton
    delete_object: QPushButton
    lock_object: QPushButton
    discard: QPushButton
    progress: QProgressBar
    status: QLabel
    classes: QListWidget
    class_add: QPushButton
    class_remove: QPushButton
    class_assign: QPushButton
    objects: QTableWidget
    colour_by_class: QCheckBox
    export_dir: QLineEdit
    export_browse: QPushButton
    formats: dict[str, QCheckBox]
    overwrite: QCheckBox
    keep_original: QCheckBox
    export: QPushButton
    qa_input: QLineEdit
    qa_input_browse: QPushButton
    qa_output: QLineEdit
    qa_output_browse: QPushButton
    qa_open: QPushButton
    qa_progress: QLabel
    qa_verdict: QLabel
    qa_accept: QPushButton
    qa_reject: QPushButton
    qa_skip: QPushButton
    qa_previous: QPushButton
    qa_next: QPushButton
    qa_close: QPushButton
    qa_adapt: QPushButton
    qa_good: QPushButton


def _tip(widget, key: str):
    widget.setToolTip(TOOLTIPS[key])
    return widget


def _spin(key: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.0, 1.0)
    spin.setSingleStep(0.05)
    spin.setDecimals(3)
    return _tip(spin, key)


def _row(*widgets) -> QWidget:
    box = QWidget()
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        lay.addWidget(w)
    return box


def _grid(*buttons, columns: int = 2) -> QWidget:
    """Buttons in rows of ``columns`` (a narrow dock: they wrap instead of widening it); a last odd one spans."""
    box = QWidget()
    lay = QGridLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    for i, b in enumerate(buttons):
        last_alone = i == len(buttons) - 1 and i % columns == 0
        lay.addWidget(b, i // columns, i % columns, 1, columns if last_alone else 1)
    return box


def _narrow(combo: QComboBox, chars: int = 8) -> QComboBox:
    """A combo box whose size hint does not grow with its longest item (long layer or preset names)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    return combo


def _folder_row(key: str, browse_key: str) -> tuple[QLineEdit, QPushButton, QWidget]:
    edit, browse = _tip(QLineEdit(), key), _tip(QPushButton("…"), browse_key)
    browse.setMaximumWidth(32)
    return edit, browse, _row(edit, browse)


DOCK_WIDTH = 320
"""The dock's widest size hint (px): the canvas keeps the rest of the window."""


def build_controls(parent: QWidget) -> Controls:
    """Create all controls inside ``parent`` (tabs, then the progress bar and status line) and return them."""
    c = {}
    outer = QVBoxLayout(parent)
    tabs = c["tabs"] = QTabWidget()
    tabs.setUsesScrollButtons(True)  # the tab names never widen the dock
    outer.addWidget(tabs)

    # ---- Segment tab: what a person uses on every image
    seg = QWidget()
    form = QFormLayout(seg)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    c["image"] = _narrow(_tip(QComboBox(), "image"))
    c["all_frames"] = _tip(QCheckBox("all frames"), "all_frames")
    form.addRow("Image", _row(c["image"], c["all_frames"]))
    c["object_name"] = _tip(QLineEdit(), "object_name")
    form.addRow("Object", c["object_name"])
    for key, label in (("prompt_threshold", "τ_prompt"), ("mask_threshold", "τ_mask"), ("alpha", "α")):
        c[key] = _spin(key)
        if key == "prompt_threshold":  # a suggested τ (e.g. 0.032) is reachable with the arrows too
            c[key].setSingleStep(0.01)
            c["tau_suggest"] = _tip(QPushButton("Suggest"), "tau_suggest")
            c["tau_preview"] = _tip(QCheckBox("preview"), "tau_preview")
            form.addRow(label, _row(c[key], c["tau_suggest"], c["tau_preview"]))
        else:
            form.addRow(label, c[key])
    c["run"], c["cancel"] = _tip(QPushButton("Run"), "run"), _tip(QPushButton("Cancel"), "cancel")
    c["cancel"].setEnabled(False)
    c["refine"], c["flip"] = _tip(QPushButton("Refine (R)"), "refine"), _tip(QPushButton("Flip label (F)"), "flip")
    c["negative"] = _tip(QPushButton("Negative (N)"), "negative")
    c["negative"].setCheckable(True)
    c["delete_prompts"] = _tip(QPushButton("Delete prompts (Del)"), "delete_prompts")
    c["delete_object"] = _tip(QPushButton("Delete object"), "delete_object")
    c["lock_object"] = _tip(QPushButton("Lock object"), "lock_object")
    c["discard"] = _tip(QPushButton("Discard corrections"), "discard")
    form.addRow(_grid(c["run"], c["cancel"], c["refine"], c["flip"], c["negative"], c["delete_prompts"],
                      c["delete_object"], c["lock_object"], c["discard"]))
    c["across"] = _narrow(_tip(QComboBox(), "across"))
    c["across"].addItems(["image layers", "stack frames"])
    c["across_run"] = _tip(QPushButton("Score"), "across_run")
    form.addRow("Across", _row(c["across"], c["across_run"]))
    tabs.addTab(seg, "Segment")

    # ---- Settings tab: the engine (set once), local weights and normal references
    eng = QWidget()
    form = QFormLayout(eng)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    c["preset"] = _narrow(_tip(QComboBox(), "preset"))
    c["preset"].addItems(list(PRESETS))
    c["device"] = _narrow(_tip(QComboBox(), "device"), 5)
    c["device"].addItems(list(DEVICES))
    c["backend"] = _narrow(_tip(QComboBox(), "backend"), 5)
    c["backend"].addItems(list(BACKENDS))
    form.addRow("Preset", c["preset"])
    form.addRow("Device", c["device"])
    form.addRow("Backend", c["backend"])
    c["umci"], c["umci_browse"], umci_row = _folder_row("umci", "umci_browse")
    c["umci"].setPlaceholderText("none: training-free map")
    form.addRow("UMCI", umci_row)
    c["clip_weights"], c["clip_browse"], row = _folder_row("clip_weights", "clip_browse")
    c["clip_weights"].setPlaceholderText("download official")
    form.addRow("CLIP weights", row)
    c["sam_weights"], c["sam_browse"], row = _folder_row("sam_weights", "sam_browse")
    c["sam_weights"].setPlaceholderText("download official")
    form.addRow("SAM weights", row)
    c["ref_layers"] = _tip(QPushButton("Selected layers"), "ref_layers")
    c["ref_folder"] = _tip(QPushButton("Folder…"), "ref_folder")
    c["ref_clear"] = _tip(QPushButton("Clear"), "ref_clear")
    form.addRow("Normal refs", _grid(c["ref_layers"], c["ref_folder"], c["ref_clear"]))
    c["ref_info"] = _tip(QLabel(""), "ref_info")
    c["ref_info"].setWordWrap(True)
    form.addRow("", c["ref_info"])
    c["aligned"] = _tip(QCheckBox("aligned parts (fixture)"), "aligned")
    form.addRow("Folder", c["aligned"])
    tabs.addTab(eng, "Settings")

    # ---- Export tab (classes, objects, export)
    cls = QWidget()
    lay = QVBoxLayout(cls)
    group = QGroupBox("Defect classes")
    glay = QVBoxLayout(group)
    c["classes"] = _tip(QListWidget(), "classes")
    c["classes"].setMaximumHeight(110)
    glay.addWidget(c["classes"])
    c["class_add"], c["class_remove"] = _tip(QPushButton("Add"), "class_add"), _tip(QPushButton("Remove"),
                                                                                    "class_remove")
    glay.addWidget(_row(c["class_add"], c["class_remove"]))
    c["class_assign"] = _tip(QPushButton("Assign class to selected label"), "class_assign")
    glay.addWidget(c["class_assign"])
    lay.addWidget(group)
    group = QGroupBox("Objects")
    olay = QVBoxLayout(group)
    c["objects"] = _tip(QTableWidget(0, 3), "objects")
    c["objects"].setHorizontalHeaderLabels(["id", "size", "class"])
    c["objects"].setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    c["objects"].setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    c["objects"].setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    c["objects"].verticalHeader().setVisible(False)
    header = c["objects"].horizontalHeader()  # no sideways scrolling: id and size as wide as their numbers,
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # the class menu gets the rest
    header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
    c["objects"].setMaximumHeight(150)
    olay.addWidget(c["objects"])
    c["colour_by_class"] = _tip(QCheckBox("colour by class"), "colour_by_class")
    olay.addWidget(c["colour_by_class"])
    lay.addWidget(group)
    group = QGroupBox("Export pseudo-labels")
    gform = QFormLayout(group)
    c["export_dir"], c["export_browse"], row = _folder_row("export_dir", "export_browse")
    gform.addRow("Folder", row)
    c["formats"] = {f: _tip(QCheckBox(f), f"format_{f}") for f in FORMATS}
    gform.addRow("Formats", _grid(*c["formats"].values()))
    c["overwrite"] = _tip(QCheckBox("overwrite existing files"), "overwrite")
    gform.addRow(c["overwrite"])
    c["keep_original"] = _tip(QCheckBox("keep 16-bit originals"), "keep_original")
    gform.addRow(c["keep_original"])
    c["export"] = _tip(QPushButton("Export"), "export")
    gform.addRow(c["export"])
    lay.addWidget(group)
    lay.addStretch(1)
    tabs.addTab(cls, "Export")

    # ---- Review tab (the folder review)
    qa = QWidget()
    qform = QFormLayout(qa)
    c["qa_input"], c["qa_input_browse"], row = _folder_row("qa_input", "qa_browse")
    qform.addRow("Images", row)
    c["qa_output"], c["qa_output_browse"], row = _folder_row("qa_output", "qa_browse")
    qform.addRow("Labels", row)
    c["qa_open"] = _tip(QPushButton("Open"), "qa_open")
    qform.addRow(c["qa_open"])
    c["qa_progress"] = _tip(QLabel("no folder open"), "qa_progress")
    c["qa_verdict"] = _tip(QLabel(""), "qa_verdict")
    for label in (c["qa_progress"], c["qa_verdict"]):  # a row each, wrapped: long names must not widen the dock
        label.setWordWrap(True)
        qform.addRow(label)
    c["qa_accept"], c["qa_reject"], c["qa_skip"] = (_tip(QPushButton(t), k) for t, k in
                                                    (("Accept", "qa_accept"), ("Reject", "qa_reject"),
                                                     ("Skip", "qa_skip")))
    c["qa_good"] = _tip(QPushButton("Good → reference"), "qa_good")
    qform.addRow(_grid(c["qa_accept"], c["qa_reject"], c["qa_skip"], c["qa_good"]))
    c["qa_previous"], c["qa_next"] = _tip(QPushButton("◀ Previous"), "qa_previous"), _tip(QPushButton("Next ▶"),
                                                                                           "qa_next")
    c["qa_close"] = _tip(QPushButton("Close review"), "qa_close")
    qform.addRow(_row(c["qa_previous"], c["qa_next"], c["qa_close"]))
    c["qa_adapt"] = _tip(QPushButton("Adapt to this product"), "qa_adapt")
    qform.addRow(c["qa_adapt"])
    tabs.addTab(qa, "Review")

    # ---- shared progress and status
    c["progress"] = _tip(QProgressBar(), "progress")
    c["progress"].setRange(0, 100)
    c["progress"].setValue(0)
    outer.addWidget(c["progress"])
    c["status"] = _tip(QLabel("Ready."), "status")
    c["status"].setWordWrap(True)
    c["status"].setTextInteractionFlags(c["status"].textInteractionFlags() | _selectable())
    outer.addWidget(c["status"])
    outer.addStretch(1)
    return Controls(**c)


def _selectable():
    from qtpy.QtCore import Qt

    return Qt.TextInteractionFlag.TextSelectableByMouse
