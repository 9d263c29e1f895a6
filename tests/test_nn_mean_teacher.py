"""Mean teacher: the teacher's weights are exactly the EMA of the student's; consistency loss
reaches only the student."""

import math

import pytest
import torch
from torch import nn

from rlkit.nn.mean_teacher import EMATeacher, consistency_loss, sigmoid_rampup


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("ramp", [False, True])
def test_teacher_weights_are_the_exact_ema(ramp: bool):
    student = _student()
    teacher = EMATeacher(student, decay=0.9, ramp=ramp)
    expected = {k: v.detach().clone() for k, v in student.named_parameters()}
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for n in range(6):
        opt.zero_grad()
        student(torch.randn(8, 3, generator=g, dtype=torch.float64)).pow(2).sum().backward()
        opt.step()
        alpha = min(0.9, 1 - 1 / (n + 1)) if ramp else 0.9
        for k, p in student.named_parameters():
            expected[k] = alpha * expected[k] + (1 - alpha) * p.detach()
        teacher.update()
    for k, p in teacher.teacher.named_parameters():
        torch.testing.assert_close(p, expected[k], rtol=1e-13, atol=1e-13)
        assert not p.requires_grad
    teacher_params, student_params = teacher.teacher.parameters(), student.parameters()
    assert any(
        not torch.allclose(t, s) for t, s in zip(teacher_params, student_params, strict=True)
    )
    for t, s in zip(teacher.teacher.buffers(), student.buffers(), strict=True):
        torch.testing.assert_close(t, s)  # batch-norm statistics copied


def test_ramp_first_update_copies_the_student():
    student = _student()
    teacher = EMATeacher(student, decay=0.99, ramp=True)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update()
    for t, s in zip(teacher.teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, s)
    assert teacher.current_decay() == pytest.approx(0.5)


def test_consistency_loss_gradient_reaches_only_the_student():
    student = _student()
    teacher = EMATeacher(student, decay=0.99)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(1.5)
    x = torch.randn(8, 3, dtype=torch.float64)
    student_out = student(x)
    teacher_out = teacher(x)
    assert not teacher_out.requires_grad
    loss = consistency_loss(student_out, teacher_out)
    torch.testing.assert_close(loss, (student_out - teacher_out).pow(2).mean())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.teacher.parameters())
    probs = consistency_loss(student_out, teacher_out, softmax=True)
    expected = (student_out.softmax(-1) - teacher_out.softmax(-1)).pow(2).mean()
    torch.testing.assert_close(probs, expected)
    with pytest.raises(ValueError, match="shapes differ"):
        consistency_loss(student_out, teacher_out[:, :1])


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(500, 100) == 1.0
