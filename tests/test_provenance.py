"""What every row and bench file records of its machine is there in every process that asks."""
import torch

from microdense.provenance import onednn_isa, onednn_verbose


def test_the_isa_is_named_even_after_onednn_printed_its_header_once():
    x = torch.zeros(1, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    onednn_verbose(lambda: torch.nn.functional.conv2d(x, torch.zeros(8, 2, 3, 3), groups=4))  # the header, if ever
    onednn_isa.cache_clear()
    isa = onednn_isa()  # oneDNN prints its header once per process: this asks a fresh interpreter
    assert isa and isa.startswith("Intel ")
