//! Naive reference computations for the unit tests.

use crate::window::{window, WindowAttributes, SPATIAL};
use opal_plugin_api::{testing::OwnedTensor, Attribute, Attributes};

/// The output shape and values of a Conv node, by the definition (f64 accumulation).
pub(crate) fn conv_reference(
    inputs: &[OwnedTensor],
    attributes: &[Attribute<'_>],
) -> (Vec<usize>, Vec<f32>) {
    let attributes = Attributes::new(attributes);
    let window_attributes = WindowAttributes::read("T", &attributes).unwrap();
    let (xs, ws) = (inputs[0].shape(), inputs[1].shape());
    let window = window("T", &window_attributes, &xs[2..], &ws[2..]).unwrap();
    let group = attributes.int("group", 1).unwrap() as usize;
    let (x, w) = (inputs[0].as_slice::<f32>(), inputs[1].as_slice::<f32>());
    let bias = inputs.get(2).map(|b| b.as_slice::<f32>());
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    let (cg, mg) = (c / group, m / group);
    let [ad, ah, aw] = window.axes;
    let mut y = Vec::new();
    for image in 0..n {
        for oc in 0..m {
            let g = oc / mg;
            for od in 0..ad.output {
                for oh in 0..ah.output {
                    for ow in 0..aw.output {
                        let mut sum = bias.map_or(0.0, |b| b[oc] as f64);
                        for ic in 0..cg {
                            for kd in 0..ad.kernel {
                                for kh in 0..ah.kernel {
                                    for kw in 0..aw.kernel {
                                        let id = (od * ad.stride) as isize + ad.tap_offset(kd);
                                        let ih = (oh * ah.stride) as isize + ah.tap_offset(kh);
                                        let iw = (ow * aw.stride) as isize + aw.tap_offset(kw);
                                        let inside =
                                            [(id, ad.input), (ih, ah.input), (iw, aw.input)]
                                                .iter()
                                                .all(|&(i, len)| i >= 0 && (i as usize) < len);
                                        if !inside {
                                            continue;
                                        }
                                        let channel = image * c + g * cg + ic;
                                        let xi = ((channel * ad.input + id as usize) * ah.input
                                            + ih as usize)
                                            * aw.input
                                            + iw as usize;
                                        let wi = (((oc * cg + ic) * ad.kernel + kd) * ah.kernel
                                            + kh)
                                            * aw.kernel
                                            + kw;
                                        sum += x[xi] as f64 * w[wi] as f64;
                                    }
                                }
                            }
                        }
                        y.push(sum as f32);
                    }
                }
            }
        }
    }
    let mut shape = vec![n, m];
    shape.extend(
        window.axes[SPATIAL - window.dims..]
            .iter()
            .map(|a| a.output),
    );
    (shape, y)
}
