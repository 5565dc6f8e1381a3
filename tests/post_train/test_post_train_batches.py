import torch

from configs.model import tiny_model
from model import Ling2ForCausalLM
from training.post_train.common import response_batch, token_logps


def test_target_mask_marks_exactly_the_model_written_response_tokens():
    prompts, responses, masks = [[5, 6, 7], [8]], [[1, 2, 3, 4], [9, 9]], [[1, 1, 0, 1], [1, 1]]
    ids, attn, target = response_batch(prompts, responses, masks, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 1, 2, 3, 4], [8, 9, 9, 0, 0, 0, 0]]
    assert attn.tolist() == [[1] * 7, [1, 1, 1, 0, 0, 0, 0]]
    # target position t predicts token t+1: row 0 predicts 1, 2, (3 is an observation), 4.
    assert target.tolist() == [[0, 0, 1, 1, 0, 1], [1, 1, 0, 0, 0, 0]]
    predicted = [ids[b, 1:][target[b].bool()].tolist() for b in range(2)]
    assert predicted == [[1, 2, 4], [9, 9]]


def test_token_logps_are_the_log_softmax_at_the_next_token():
    torch.manual_seed(0)
    model = Ling2ForCausalLM(tiny_model()).eval()
    ids, attn, _ = response_batch([[5, 6, 7]], [[1, 2]], [[1, 1]], pad_id=0)
    with torch.no_grad():
        got = token_logps(model, ids, attn)
        logp = torch.log_softmax(model(ids).logits.float(), -1)
    want = torch.stack([logp[0, t, ids[0, t + 1]] for t in range(ids.shape[1] - 1)])
    torch.testing.assert_close(got[0], want)
