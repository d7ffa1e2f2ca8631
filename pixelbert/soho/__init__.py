"""SOHO (arXiv 2104.03135): Pixel-BERT's pixel encoder plus a visual dictionary and masked visual modelling."""

from pixelbert.soho.encoder import SohoEncoder
from pixelbert.soho.mvm import MvmHead, mvm_loss, mvm_mask
from pixelbert.soho.visual_dictionary import VisualDictionary, dictionary_usage

__all__ = ["SohoEncoder", "VisualDictionary", "dictionary_usage", "MvmHead", "mvm_loss", "mvm_mask"]
