import Foundation
import Tensor

/// Softmax cross-entropy averaged over the batch, with label smoothing: the target distribution is
/// `(1 − ε)·onehot + ε/K` (PyTorch's `CrossEntropyLoss(label_smoothing: ε)`). With a teacher's probabilities
/// (knowledge distillation, Hinton et al. 2015, temperature 1) the target becomes `(1 − α)·that + α·teacher`.
public struct SoftmaxCrossEntropy: Sendable {
    public var labelSmoothing: Float

    public init(labelSmoothing: Float = 0) {
        precondition(labelSmoothing >= 0 && labelSmoothing < 1, "label smoothing must be in [0, 1), got \(labelSmoothing)")
        self.labelSmoothing = labelSmoothing
    }

    /// The loss (a scalar `Variable` on the tape) and how many rows' arg-max equals their label.
    /// `teacher`: row-major class probabilities of the same rows, mixed into the target with weight `teacherWeight`.
    public func callAsFunction(_ logits: Variable, labels: [Int], teacher: [Float]? = nil, teacherWeight: Float = 0,
                               context: ForwardContext) -> (loss: Variable, correct: Int) {
        precondition(logits.shape.count == 2 && logits.shape[0] == labels.count,
                     "cross-entropy: logits \(logits.shape) for \(labels.count) labels")
        let (rows, classes) = (logits.shape[0], logits.shape[1])
        precondition(teacher == nil || teacher!.count == rows * classes, "cross-entropy: teacher probabilities for \(rows)×\(classes)")
        let smoothing = labelSmoothing, alpha = teacher == nil ? 0 : teacherWeight
        let teacherProbabilities = teacher ?? []
        /// The target probability of class j in row r.
        func target(_ r: Int, _ j: Int) -> Float {
            let hard = smoothing / Float(classes) + (j == labels[r] ? 1 - smoothing : 0)
            return alpha == 0 ? hard : (1 - alpha) * hard + alpha * teacherProbabilities[r * classes + j]
        }
        var probabilities = [Float](repeating: 0, count: rows * classes)
        var total: Double = 0
        var correct = 0
        logits.value.data.withUnsafeBufferPointer { z in
            for r in 0..<rows {
                let row = z.baseAddress! + r * classes
                var largest = row[0], best = 0
                for j in 1..<classes where row[j] > largest { largest = row[j]; best = j }
                if best == labels[r] { correct += 1 }
                var sum: Double = 0
                for j in 0..<classes {
                    let e = Foundation.exp(Double(row[j] - largest))
                    probabilities[r * classes + j] = Float(e)
                    sum += e
                }
                let logSum = Foundation.log(sum) + Double(largest)
                var rowLoss: Double = 0
                for j in 0..<classes {
                    probabilities[r * classes + j] = Float(Double(probabilities[r * classes + j]) / sum)
                    rowLoss += Double(target(r, j)) * (logSum - Double(row[j]))
                }
                total += rowLoss
            }
        }
        let loss = Variable(Tensor(shape: [], data: [Float(total / Double(rows))]), requiresGradient: context.needsGradient(logits))
        if loss.requiresGradient {
            context.record(loss) {
                let upstream = loss.gradient[0] / Float(rows)
                logits.accumulateGradient { gradient in
                    for r in 0..<rows {
                        for j in 0..<classes {
                            gradient[r * classes + j] += upstream * (probabilities[r * classes + j] - target(r, j))
                        }
                    }
                }
            }
        }
        return (loss, correct)
    }
}

/// Softmax of each row of `logits` (`rows × classes`), e.g. a teacher's predictions for distillation.
public func softmaxRows(_ logits: Tensor) -> [Float] {
    precondition(logits.shape.count == 2, "softmax rows: expected a matrix, got \(logits.shape)")
    let classes = logits.shape[1]
    var probabilities = logits.data
    for r in 0..<logits.shape[0] {
        let row = (r * classes)..<((r + 1) * classes)
        let largest = probabilities[row].max() ?? 0
        var sum: Float = 0
        for i in row { probabilities[i] = Foundation.exp(probabilities[i] - largest); sum += probabilities[i] }
        for i in row { probabilities[i] /= sum }
    }
    return probabilities
}
