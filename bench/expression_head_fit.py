# Exploration script as run for the README figures (features: bench/expression_features.py's cache).
"""Fit the shipped head on pooled sizes; report grouped-CV figures per size.

Usage: expression_head_fit.py OUT.npz native,24,48 [BLOCKS]  (BLOCKS default mx,hu,blend,pose;
the light head: mx,blend,pose)."""
import sys, json, numpy as np
from recognition.evaluation.expressions import *
from recognition.face.expression_head import *
from recognition.face.readability import judge, ReadabilityParams
# The gate both shipped heads were fitted and scored under (the gate's defaults when the first was
# fitted; gate 2, at run time, reads pupils >= 10 px and sharpness >= 40).
GATE=ReadabilityParams(min_iod_px=10.0, min_sharpness=20.0)
from ingest.eval_expressions import identity_of
sys.path.insert(0, __import__('os').path.dirname(__file__))
from expression_features import load_feats
MI=0; C=0.3; BLOCKS=tuple((sys.argv[3] if len(sys.argv)>3 else 'mx,hu,blend,pose').split(','))
X=[];Y=[];G=[];S=[]
for name in sys.argv[2].split(','):
  d=load_feats(name)  # bench/expression_features.py's cache (~/.cache/affectline/bench)
  gate=judge(np.where(np.isfinite(d['box']),d['box'],0),d['found'].astype(bool),d['pose'],d['sharp'],d['iod'],GATE)
  read=gate.readable & d['det'].astype(bool)
  F={'mx':d['mx'][read,MI],'hu':d['hu'][read,MI],'blend':d['blend'][read],'pose':d['pose'][read]}
  X.append(stack(F,BLOCKS)); Y.append(d['label'][read].astype(int)); G.append(np.array([identity_of(f) for f in d['fname'][read]])); S+= [name]*int(read.sum())
X=np.concatenate(X);Y=np.concatenate(Y);G=np.concatenate(G);S=np.array(S)
oof=grouped_cv_logits(X,Y,G,C,False)
zc=calibrated_cv_logits(oof,Y,G)
res={}
for name in sys.argv[2].split(','):
  m=S==name; p=softmax(zc[m]); yy=Y[m]; cm=confusion(yy,p.argmax(1))
  res[name]=dict(n=int(m.sum()),acc=float(np.mean(p.argmax(1)==yy)),f1_5=macro_f1(cm,SCORED_IDX),f1_7=macro_f1(cm),ece=ece(p,yy),answered=float((p.max(1)>=0.5).mean()),recall=recalls(cm).round(2).tolist(),confusion=cm.tolist())
  print(name,{k:(round(v,3) if isinstance(v,float) else v) for k,v in res[name].items() if k!='confusion'})
from sklearn.linear_model import LogisticRegression
from recognition.face.expression_head import _fit_linear
t=fit_temperature(oof,Y)
head=ExpressionHead(BLOCKS,*_fit_linear(X,Y,C,False),temperature=t)
head.save(sys.argv[1]); print('T',t)
json.dump(res,open(sys.argv[1]+'.cv.json','w'),indent=1)
