"""Bottom-up attention's attribute head: the training signal that makes region features describe colours.

Anderson et al. (2018) train their Visual Genome Faster R-CNN with an extra output beside the object classes
(peteanderson80/bottom-up-attention, ``models/vg/ResNet-101/faster_rcnn_end2end_final/train.prototxt``): each
foreground RoI's pooled feature is concatenated with a 256-d embedding of its ground-truth class
(``cls_embedding``), passed through a 512-unit ReLU layer (``fc_attr``) and scored over the attributes plus
"no attribute" (``attr_score``, 401 outputs), with a softmax loss of weight 0.5 averaged over RoIs that have a
label (``ignore_label: -1``, ``normalization: VALID``). The head is dropped when features are extracted: what it
leaves behind is a box feature (``pool5_flat``; here the box head's output) that keeps attributes such as colour,
which an object-class loss alone has no reason to keep.

:class:`AttributeRoIHeads` is torchvision's ``RoIHeads`` with that loss added in training; inference (detections,
region features) is torchvision's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

# train.prototxt's sizes and weight.
CLASS_EMBEDDING = 256
HIDDEN = 512


class AttributeHead(nn.Module):
    """Box feature + class embedding -> attribute logits (index 0 = "no attribute")."""

    def __init__(self, feature_size: int, num_classes: int, num_attributes: int) -> None:
        super().__init__()
        self.class_embedding = nn.Embedding(num_classes + 1, CLASS_EMBEDDING)  # + background, as Caffe's 1601
        self.fc = nn.Linear(feature_size + CLASS_EMBEDDING, HIDDEN)
        self.score = nn.Linear(HIDDEN, num_attributes + 1)
        for layer in (self.class_embedding, self.fc, self.score):  # gaussian std 0.01 fillers, zero biases
            nn.init.normal_(layer.weight, std=0.01)
        for layer in (self.fc, self.score):
            nn.init.zeros_(layer.bias)

    def forward(self, box_features: Tensor, classes: Tensor) -> Tensor:
        return self.score(F.relu(self.fc(torch.cat([box_features, self.class_embedding(classes)], dim=1))))


def attribute_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Softmax cross-entropy over the RoIs with a label (-1 = none), zero when no RoI has one."""
    valid = targets >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid], targets[valid])


class AttributeRoIHeads(RoIHeads):
    """torchvision's RoI heads plus :class:`AttributeHead`, trained on the targets' ``attributes`` ([N] long,
    each box's attribute id, 0 = none)."""

    def __init__(self, heads: RoIHeads, attribute: AttributeHead, loss_weight: float) -> None:
        super().__init__(heads.box_roi_pool, heads.box_head, heads.box_predictor,
                         heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
                         heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
                         heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
        self.attribute = attribute
        self.loss_weight = loss_weight

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: ANN001 - torchvision's signature
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        assert targets is not None, "training needs targets"
        proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        # Foreground RoIs only (train.prototxt slices them off), labelled with their matched box's attribute.
        classes = torch.cat(labels)
        wanted = torch.cat([torch.where(lab > 0, t["attributes"][idx], torch.full_like(lab, -1))
                            for lab, idx, t in zip(labels, matched, targets)])
        foreground = classes > 0
        logits = self.attribute(box_features[foreground], classes[foreground])
        loss_attribute = attribute_loss(logits, wanted[foreground]) * self.loss_weight
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg,
                    "loss_attribute": loss_attribute}

    @torch.no_grad()
    def predict(self, box_features: Tensor, classes: Tensor) -> Tensor:
        """Each box's most likely attribute given its class (0 = none)."""
        return self.attribute(box_features, classes).argmax(dim=1)
