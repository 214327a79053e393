"""CT-to-PET alignment: rigid (optionally then affine) mutual-information registration with
SimpleITK, and resampling of the CT onto the PET grid.

The PET is the fixed image: after alignment both channels share the PET's grid (same slices,
same voxels), which is what stacking them as channels needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

CT_AIR = -1000.0


@dataclass(frozen=True)
class Registration:
    """The fitted transform (maps fixed-image physical points to moving-image points, LPS mm) and how it went."""

    transform: sitk.Transform
    metric: float  # final Mattes mutual information (negative; lower is better)
    stop_condition: str

    def to_dict(self) -> dict:
        return {
            "kind": self.transform.GetName(),
            "parameters": list(self.transform.GetParameters()),
            "fixed_parameters": list(self.transform.GetFixedParameters()),
            "metric": self.metric,
            "stop_condition": self.stop_condition,
        }


def _fit(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, seed: int) -> tuple[float, str]:
    """Optimises ``transform`` in place; returns (final metric, stop condition)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=300, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return float(method.GetMetricValue()), method.GetOptimizerStopConditionDescription()


def register_images(fixed_image: sitk.Image, moving_image: sitk.Image, affine: bool = False, seed: int = 0) -> Registration:
    """Rigid (Euler 3-D) MI registration of ``moving_image`` to ``fixed_image`` at 3 resolutions,
    initialised by the images' centres; with ``affine``, an affine stage starts from the rigid result.
    The transform maps fixed-image points to moving-image points (SimpleITK's convention)."""
    fixed = sitk.Cast(fixed_image, sitk.sitkFloat32)
    moving = sitk.Cast(moving_image, sitk.sitkFloat32)
    rigid = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY))
    metric, stop = _fit(fixed, moving, rigid, seed)
    if not affine:
        return Registration(rigid, metric, stop)
    general = sitk.AffineTransform(3)
    general.SetCenter(rigid.GetCenter())
    general.SetMatrix(rigid.GetMatrix())
    general.SetTranslation(rigid.GetTranslation())
    metric, stop = _fit(fixed, moving, general, seed)
    return Registration(general, metric, stop)


def _onto(image: sitk.Image, fixed: sitk.Image, registration: Registration | None, interpolator: int, outside: float, pixel_type: int) -> sitk.Image:
    """``image`` (moving space) resampled onto ``fixed``'s exact grid; identity when ``registration`` is None."""
    transform = registration.transform if registration is not None else sitk.Transform()
    return sitk.Resample(image, fixed, transform, interpolator, outside, pixel_type)


def ct_on_pet_grid(ct: sitk.Image, pet: sitk.Image, registration: Registration | None) -> sitk.Image:
    """The CT resampled (linear, float32, air outside) onto the PET's exact grid."""
    return _onto(ct, pet, registration, sitk.sitkLinear, CT_AIR, sitk.sitkFloat32)


def labels_on_pet_grid(labels: sitk.Image, pet: sitk.Image, registration: Registration | None) -> sitk.Image:
    """A CT-grid label map resampled (nearest neighbour) onto the PET grid."""
    return _onto(labels, pet, registration, sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


def moving_on_fixed_grid(moving: sitk.Image, fixed: sitk.Image, registration: Registration) -> sitk.Image:
    """``moving`` resampled (linear, its own pixel type, its minimum outside) onto ``fixed``'s exact grid."""
    outside = float(np.min(sitk.GetArrayViewFromImage(moving)))
    return _onto(moving, fixed, registration, sitk.sitkLinear, outside, moving.GetPixelID())
